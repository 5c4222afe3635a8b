//! Fixed newstyle negotiation: from the server greeting to the export the
//! client chose (NBD_OPT_GO or NBD_OPT_EXPORT_NAME), or to the end of a
//! connection that only listed, asked for information or aborted.
//!
//! Where the listener requires TLS, a client that has not completed
//! NBD_OPT_STARTTLS learns nothing: every option but STARTTLS and ABORT is
//! answered NBD_REP_ERR_TLS_REQD. Whatever the listener, a client sees
//! and opens only the exports that admit it ([`Export::admits`]); to
//! others an export does not exist.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::exports::{Export, Exports, Peer};
use super::proto::*;

/// What a connection's negotiation may do, and who the client is.
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub peer: Peer,
    /// Nothing but STARTTLS is served before TLS.
    pub tls_required: bool,
    /// STARTTLS is accepted (the server has a TLS context and keys).
    pub tls_offered: bool,
}

impl Session {
    fn in_tls(&self) -> bool {
        self.peer.identity.is_some()
    }
}

/// What negotiation ended in.
pub enum Outcome {
    /// Enter transmission on this export until `revoked` fires.
    Transmit {
        export: Arc<Export>,
        structured: bool,
        revoked: CancellationToken,
    },
    /// The client sent NBD_OPT_STARTTLS and got its ACK: run the TLS
    /// handshake, then [`negotiate`] again (without a greeting) over TLS.
    StartTls,
    /// The client aborted or negotiation failed; close the connection.
    Close,
}

/// Transmission flags of `export` for a client with or without structured
/// replies.
pub fn transmission_flags(export: &Export, structured: bool) -> u16 {
    use crate::bdev::IoKind;
    let mut flags = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA | TFLAG_CAN_MULTI_CONN;
    if export.read_only {
        flags |= TFLAG_READ_ONLY;
    }
    if export.bdev.supports(IoKind::Unmap) {
        flags |= TFLAG_SEND_TRIM;
    }
    if export.bdev.supports(IoKind::WriteZeroes) {
        flags |= TFLAG_SEND_WRITE_ZEROES;
    }
    if structured {
        flags |= TFLAG_SEND_DF;
    }
    flags
}

/// The server greeting and the client's flags; returns whether the client
/// asked for no zeroes, or `None` to close.
pub async fn greet<S>(stream: &mut S) -> std::io::Result<Option<bool>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut greeting = Vec::with_capacity(18);
    greeting.extend_from_slice(&NBDMAGIC.to_be_bytes());
    greeting.extend_from_slice(&IHAVEOPT.to_be_bytes());
    greeting.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    stream.write_all(&greeting).await?;

    let client_flags = stream.read_u32().await?;
    if client_flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        tracing::debug!(client_flags, "client sent unknown handshake flags; closing");
        return Ok(None);
    }
    Ok(Some(client_flags & FLAG_C_NO_ZEROES != 0))
}

/// The option haggling, after [`greet`] (and again after STARTTLS, over
/// TLS: the protocol has no second greeting).
pub async fn negotiate<S>(
    stream: &mut S,
    exports: &Exports,
    session: &Session,
    no_zeroes: bool,
) -> std::io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // State from before STARTTLS does not carry over into TLS.
    let mut structured = false;

    loop {
        let mut header = [0u8; 16];
        stream.read_exact(&mut header).await?;
        let (option, length) = match parse_option_header(&header) {
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::debug!("{e}; closing");
                return Ok(Outcome::Close);
            }
        };
        if length > MAX_OPTION_BYTES {
            // Not worth reading to stay in sync: say why and hang up.
            stream
                .write_all(&option_reply(
                    option,
                    REP_ERR_TOO_BIG,
                    b"option payload too large",
                ))
                .await?;
            return Ok(Outcome::Close);
        }
        let mut data = vec![0u8; length as usize];
        stream.read_exact(&mut data).await?;

        let reply = |kind: u32, message: &str| option_reply(option, kind, message.as_bytes());
        if session.tls_required && !session.in_tls() && !matches!(option, OPT_STARTTLS | OPT_ABORT)
        {
            if option == OPT_EXPORT_NAME {
                // No error reply exists for this option: hang up.
                return Ok(Outcome::Close);
            }
            stream
                .write_all(&reply(
                    REP_ERR_TLS_REQD,
                    "this port serves NBD over TLS only: send NBD_OPT_STARTTLS",
                ))
                .await?;
            continue;
        }
        match option {
            OPT_EXPORT_NAME => {
                let export = std::str::from_utf8(&data)
                    .ok()
                    .and_then(|name| find(exports, name, session));
                // The protocol has no error reply here: an unknown name closes.
                let Some((export, revoked)) = export else {
                    return Ok(Outcome::Close);
                };
                let mut answer = Vec::with_capacity(134);
                answer.extend_from_slice(&export.bdev.size_bytes().to_be_bytes());
                answer.extend_from_slice(&transmission_flags(&export, false).to_be_bytes());
                if !no_zeroes {
                    answer.extend_from_slice(&[0u8; 124]);
                }
                stream.write_all(&answer).await?;
                return Ok(Outcome::Transmit {
                    export,
                    structured: false,
                    revoked,
                });
            }
            OPT_ABORT => {
                stream.write_all(&reply(REP_ACK, "")).await?;
                return Ok(Outcome::Close);
            }
            OPT_LIST => {
                if !data.is_empty() {
                    stream
                        .write_all(&reply(REP_ERR_INVALID, "NBD_OPT_LIST takes no data"))
                        .await?;
                    continue;
                }
                let mut answer = Vec::new();
                for export in exports.list() {
                    if export.admits(&session.peer).is_none() {
                        continue;
                    }
                    let mut item = (export.name.len() as u32).to_be_bytes().to_vec();
                    item.extend_from_slice(export.name.as_bytes());
                    answer.extend(option_reply(option, REP_SERVER, &item));
                }
                answer.extend(reply(REP_ACK, ""));
                stream.write_all(&answer).await?;
            }
            OPT_INFO | OPT_GO => {
                let Some(request) = parse_info_request(&data) else {
                    stream
                        .write_all(&reply(REP_ERR_INVALID, "malformed NBD_OPT_INFO/GO payload"))
                        .await?;
                    continue;
                };
                let Some((export, revoked)) = find(exports, &request.name, session) else {
                    let message = format!("no export named {:?}", request.name);
                    stream.write_all(&reply(REP_ERR_UNKNOWN, &message)).await?;
                    continue;
                };
                let mut answer = option_reply(
                    option,
                    REP_INFO,
                    &info_export(
                        export.bdev.size_bytes(),
                        transmission_flags(&export, structured),
                    ),
                );
                let block_size = export.bdev.block_size();
                answer.extend(option_reply(
                    option,
                    REP_INFO,
                    &info_block_size(block_size, block_size.max(4096), MAX_PAYLOAD_BYTES),
                ));
                if request.items.contains(&INFO_NAME) {
                    answer.extend(option_reply(
                        option,
                        REP_INFO,
                        &info_text(INFO_NAME, &export.name),
                    ));
                }
                if request.items.contains(&INFO_DESCRIPTION) {
                    let description = format!(
                        "{} ({})",
                        export.bdev.name(),
                        export.bdev.backend().product_name()
                    );
                    answer.extend(option_reply(
                        option,
                        REP_INFO,
                        &info_text(INFO_DESCRIPTION, &description),
                    ));
                }
                answer.extend(reply(REP_ACK, ""));
                stream.write_all(&answer).await?;
                if option == OPT_GO {
                    return Ok(Outcome::Transmit {
                        export,
                        structured,
                        revoked,
                    });
                }
            }
            OPT_STRUCTURED_REPLY => {
                if !data.is_empty() {
                    stream
                        .write_all(&reply(
                            REP_ERR_INVALID,
                            "NBD_OPT_STRUCTURED_REPLY takes no data",
                        ))
                        .await?;
                } else {
                    structured = true;
                    stream.write_all(&reply(REP_ACK, "")).await?;
                }
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                if !structured {
                    stream
                        .write_all(&reply(
                            REP_ERR_INVALID,
                            "meta contexts need structured replies first",
                        ))
                        .await?;
                } else if !meta_context_request_is_valid(&data) {
                    stream
                        .write_all(&reply(REP_ERR_INVALID, "malformed meta context request"))
                        .await?;
                } else {
                    // No meta context is offered: zero contexts, then ACK.
                    stream.write_all(&reply(REP_ACK, "")).await?;
                }
            }
            OPT_STARTTLS => {
                if !data.is_empty() {
                    stream
                        .write_all(&reply(REP_ERR_INVALID, "NBD_OPT_STARTTLS takes no data"))
                        .await?;
                } else if session.in_tls() {
                    stream
                        .write_all(&reply(REP_ERR_INVALID, "TLS is already started"))
                        .await?;
                } else if !session.tls_offered {
                    stream
                        .write_all(&reply(REP_ERR_POLICY, "TLS is not offered on this port"))
                        .await?;
                } else {
                    stream.write_all(&reply(REP_ACK, "")).await?;
                    return Ok(Outcome::StartTls);
                }
            }
            _ => {
                stream
                    .write_all(&reply(REP_ERR_UNSUP, "option not supported"))
                    .await?;
            }
        }
    }
}

/// An export by name that admits this client, with the token that ends
/// its admission; the empty name selects the only export, if one.
fn find(
    exports: &Exports,
    name: &str,
    session: &Session,
) -> Option<(Arc<Export>, CancellationToken)> {
    let export = if name.is_empty() {
        exports.default_export()
    } else {
        exports.get(name)
    }?;
    let revoked = export.admits(&session.peer)?;
    Some((export, revoked))
}
