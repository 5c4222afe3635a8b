//! The controller side of DH-HMAC-CHAP (NVMe Base 2.0 §8.13.5) for one
//! queue, as a pure type: the queue hands it the data of each
//! Authentication Send and asks it for the data of each Authentication
//! Receive; it says what to answer and whether the queue is
//! authenticated. Any protocol error turns into an AUTH_Failure1 that the
//! next Receive returns; the host may then start over with a new
//! AUTH_Negotiate, up to [`MAX_FAILED_TRANSACTIONS`] times.
//!
//! The exchange (controller view):
//!
//! ```text
//! Send    AUTH_Negotiate (T_ID, hashes, DH groups)   -> pick hash and group
//! Receive DH-HMAC-CHAP_Challenge (C1, S1, g^y)
//! Send    DH-HMAC-CHAP_Reply (R1, [C2, S2], g^x)     -> check R1
//! Receive DH-HMAC-CHAP_Success1 ([R2])               -> authenticated unless C2
//! Send    DH-HMAC-CHAP_Success2 | AUTH_Failure2      -> authenticated | failed
//! ```
//!
//! with R1 = HMAC(Kh, Ca1 || S1 || T_ID || SC_C || "HostHost" || NQNh || 0 || NQNc)
//! and R2 = HMAC(Kc, Ca2 || S2 || T_ID || 0 || "Controller" || NQNc || 0 || NQNh),
//! Kh/Kc the transformed host/controller keys, Ca = C with the null group
//! and HMAC(H(g^xy mod p), C) otherwise.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::dh::{DhGroup, EphemeralKey};
use super::hash::{HashFunction, constant_time_eq};
use super::messages::{DHCHAP_AUTH_ID, Message, SC_C_NONE, explanation};
use super::secret::Secret;

/// Transactions a queue may fail before it is refused for good (the
/// connection is then closed): a host with the right key needs one; a
/// few allow for a re-authentication racing a key change.
pub const MAX_FAILED_TRANSACTIONS: u32 = 3;

/// The hashes and DH groups a controller allows, in its preference order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub hashes: Vec<HashFunction>,
    pub dh_groups: Vec<DhGroup>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            hashes: HashFunction::ALL.to_vec(),
            dh_groups: DhGroup::ALL.to_vec(),
        }
    }
}

/// What a queue authenticates with.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub hostnqn: String,
    pub subnqn: String,
    /// The host's key: the host proves it knows it.
    pub host_key: Arc<Secret>,
    /// The controller's key, for hosts that authenticate the controller.
    pub controller_key: Option<Arc<Secret>>,
}

/// Where the transaction is.
enum State {
    /// Waiting for AUTH_Negotiate.
    Idle,
    /// Negotiated; the next Receive returns the challenge.
    ChallengeDue {
        t_id: u16,
        hash: HashFunction,
        group: DhGroup,
    },
    /// Challenge sent; waiting for the host's Reply.
    ReplyDue {
        t_id: u16,
        hash: HashFunction,
        seqnum: u32,
        challenge: Zeroizing<Vec<u8>>,
        key: Option<EphemeralKey>,
    },
    /// Reply checked; the next Receive returns Success1 (with R2 when the
    /// host challenged the controller).
    Success1Due {
        t_id: u16,
        hash: HashFunction,
        controller_response: Option<Zeroizing<Vec<u8>>>,
    },
    /// Success1 with R2 sent; waiting for Success2 or Failure2.
    Success2Due { t_id: u16 },
    /// The next Receive returns AUTH_Failure1 with this explanation.
    Failure1Due { t_id: u16, explanation: u8 },
}

/// What an Authentication Receive gets.
#[derive(Debug, PartialEq, Eq)]
pub enum ReceiveOutcome {
    /// These bytes, as the command's data.
    Data(Vec<u8>),
    /// The allocation length is too small for the message due; the
    /// transaction fails.
    TooSmall { needed: usize },
}

/// One queue's authentication.
pub struct Authenticator {
    credentials: Credentials,
    policy: Policy,
    state: State,
    authenticated: bool,
    failed_transactions: u32,
}

impl Authenticator {
    pub fn new(credentials: Credentials, policy: Policy) -> Self {
        Self {
            credentials,
            policy,
            state: State::Idle,
            authenticated: false,
            failed_transactions: 0,
        }
    }

    /// Whether the queue may run commands other than authentication.
    pub fn authenticated(&self) -> bool {
        self.authenticated
    }

    /// Whether the host has failed too often and has been told so (no
    /// AUTH_Failure1 still due): the queue should close.
    pub fn exhausted(&self) -> bool {
        self.failed_transactions >= MAX_FAILED_TRANSACTIONS
            && !matches!(self.state, State::Failure1Due { .. })
    }

    /// Fails the transaction: the next Receive returns AUTH_Failure1.
    fn fail(&mut self, t_id: u16, explanation: u8) {
        self.failed_transactions += 1;
        // A failed re-authentication revokes the queue too.
        self.authenticated = false;
        self.state = State::Failure1Due { t_id, explanation };
    }

    /// The data of an Authentication Send.
    pub fn on_send(&mut self, data: &[u8]) {
        let message = match Message::decode(data) {
            Ok(message) => message,
            Err(_) => {
                let t_id = self.current_t_id();
                return self.fail(t_id, explanation::INCORRECT_PAYLOAD);
            }
        };
        if let Message::Negotiate {
            t_id,
            sc_c,
            descriptors,
        } = &message
        {
            // A Negotiate (re)starts the transaction in any state; one
            // abandoned before it authenticated counts as failed, so a host
            // cannot have challenges (and their DH exponentiations) made
            // without end.
            if !matches!(self.state, State::Idle) && !self.authenticated {
                self.failed_transactions += 1;
            }
            return match self.negotiate(*sc_c, descriptors) {
                Ok((hash, group)) => {
                    self.state = State::ChallengeDue {
                        t_id: *t_id,
                        hash,
                        group,
                    }
                }
                Err(why) => self.fail(*t_id, why),
            };
        }
        let expected_t_id = self.current_t_id();
        let state = std::mem::replace(&mut self.state, State::Idle);
        match (state, message) {
            (
                State::ReplyDue {
                    t_id,
                    hash,
                    seqnum,
                    challenge,
                    key,
                },
                Message::Reply {
                    t_id: got,
                    response,
                    controller_challenge,
                    seqnum: s2,
                    dh_value,
                },
            ) => {
                if got != t_id {
                    return self.fail(t_id, explanation::INCORRECT_PAYLOAD);
                }
                match self.check_reply(
                    t_id,
                    hash,
                    seqnum,
                    &challenge,
                    key.as_ref(),
                    &response,
                    controller_challenge.as_deref(),
                    s2,
                    &dh_value,
                ) {
                    Ok(controller_response) => {
                        self.state = State::Success1Due {
                            t_id,
                            hash,
                            controller_response,
                        }
                    }
                    Err(why) => self.fail(t_id, why),
                }
            }
            (State::Success2Due { t_id }, Message::Success2 { t_id: got }) if got == t_id => {
                self.authenticated = true;
                self.failed_transactions = 0;
            }
            (State::Success2Due { t_id }, Message::Failure2 { t_id: got, .. }) if got == t_id => {
                // The host refused the controller's response.
                self.failed_transactions += 1;
                self.authenticated = false;
            }
            (_, Message::Failure2 { .. }) => {
                // The host gave up (it could not use our challenge).
                self.failed_transactions += 1;
                self.authenticated = false;
            }
            _ => self.fail(expected_t_id, explanation::INCORRECT_MESSAGE),
        }
    }

    /// The data of an Authentication Receive with allocation length `al`.
    pub fn on_receive(&mut self, al: usize) -> ReceiveOutcome {
        let state = std::mem::replace(&mut self.state, State::Idle);
        let (message, next) = match state {
            State::ChallengeDue { t_id, hash, group } => {
                let challenge = random_bytes(hash.output_len());
                let seqnum = random_seqnum();
                let key = EphemeralKey::generate(group);
                let message = Message::Challenge {
                    t_id,
                    hash_id: hash.id(),
                    dh_group_id: group.id(),
                    seqnum,
                    challenge: challenge.to_vec(),
                    dh_value: key
                        .as_ref()
                        .map(|k| k.public().to_vec())
                        .unwrap_or_default(),
                };
                let next = State::ReplyDue {
                    t_id,
                    hash,
                    seqnum,
                    challenge,
                    key,
                };
                (message, next)
            }
            State::Success1Due {
                t_id,
                hash,
                controller_response,
            } => {
                let bidirectional = controller_response.is_some();
                let message = Message::Success1 {
                    t_id,
                    hash_len: hash.output_len() as u8,
                    response: controller_response.map(|r| r.to_vec()),
                };
                if bidirectional {
                    (message, State::Success2Due { t_id })
                } else {
                    self.authenticated = true;
                    self.failed_transactions = 0;
                    (message, State::Idle)
                }
            }
            State::Failure1Due { t_id, explanation } => {
                (Message::Failure1 { t_id, explanation }, State::Idle)
            }
            other => {
                // Nothing is due: the host is out of step.
                let t_id = t_id_of(&other);
                self.failed_transactions += 1;
                self.authenticated = false;
                (
                    Message::Failure1 {
                        t_id,
                        explanation: explanation::INCORRECT_MESSAGE,
                    },
                    State::Idle,
                )
            }
        };
        let bytes = message.encode();
        if bytes.len() > al {
            let t_id = message.t_id();
            self.fail(t_id, explanation::INCORRECT_PAYLOAD);
            self.state = State::Idle;
            return ReceiveOutcome::TooSmall {
                needed: bytes.len(),
            };
        }
        self.state = next;
        ReceiveOutcome::Data(bytes)
    }

    fn current_t_id(&self) -> u16 {
        t_id_of(&self.state)
    }

    /// The hash and DH group for a Negotiate, or the failure explanation.
    fn negotiate(
        &self,
        sc_c: u8,
        descriptors: &[super::messages::Descriptor],
    ) -> Result<(HashFunction, DhGroup), u8> {
        if sc_c != SC_C_NONE {
            return Err(explanation::CONCAT_MISMATCH);
        }
        let descriptor = descriptors
            .iter()
            .find(|d| d.auth_id == DHCHAP_AUTH_ID)
            .ok_or(explanation::INCORRECT_PAYLOAD)?;
        let hash = self
            .policy
            .hashes
            .iter()
            .copied()
            .find(|h| descriptor.hash_ids.contains(&h.id()))
            .ok_or(explanation::HASH_UNUSABLE)?;
        let group = self
            .policy
            .dh_groups
            .iter()
            .copied()
            .find(|g| descriptor.dh_group_ids.contains(&g.id()))
            .ok_or(explanation::DHGROUP_UNUSABLE)?;
        Ok((hash, group))
    }

    /// Checks R1; returns R2 when the host challenged the controller.
    #[allow(clippy::too_many_arguments)]
    fn check_reply(
        &self,
        t_id: u16,
        hash: HashFunction,
        seqnum: u32,
        challenge: &[u8],
        key: Option<&EphemeralKey>,
        response: &[u8],
        controller_challenge: Option<&[u8]>,
        s2: u32,
        dh_value: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, u8> {
        if response.len() != hash.output_len() {
            return Err(explanation::HASH_UNUSABLE);
        }
        let session_key = match key {
            Some(key) => Some(
                key.session_key(dh_value)
                    .map_err(|_| explanation::DHGROUP_UNUSABLE)?,
            ),
            None if dh_value.is_empty() => None,
            None => return Err(explanation::INCORRECT_PAYLOAD),
        };
        let c = &self.credentials;
        let expected = host_response(
            hash,
            &c.host_key.transformed(&c.hostnqn),
            &augmented(hash, session_key.as_ref().map(|k| k.as_slice()), challenge),
            seqnum,
            t_id,
            SC_C_NONE,
            &c.hostnqn,
            &c.subnqn,
        );
        if !constant_time_eq(&expected, response) {
            return Err(explanation::FAILED);
        }
        let Some(c2) = controller_challenge else {
            return Ok(None);
        };
        // S2 of 0 asks for no controller authentication (the value is
        // reserved for secure channel use, which is not offered).
        if s2 == 0 {
            return Ok(None);
        }
        let controller_key = c.controller_key.as_ref().ok_or(explanation::FAILED)?;
        Ok(Some(controller_response(
            hash,
            &controller_key.transformed(&c.subnqn),
            &augmented(hash, session_key.as_ref().map(|k| k.as_slice()), c2),
            s2,
            t_id,
            &c.subnqn,
            &c.hostnqn,
        )))
    }
}

fn t_id_of(state: &State) -> u16 {
    match state {
        State::Idle => 0,
        State::ChallengeDue { t_id, .. }
        | State::ReplyDue { t_id, .. }
        | State::Success1Due { t_id, .. }
        | State::Success2Due { t_id }
        | State::Failure1Due { t_id, .. } => *t_id,
    }
}

/// Ca: the challenge itself with the null group, HMAC(H(Ks), C) with a
/// session key Ks.
pub fn augmented(
    hash: HashFunction,
    session_key: Option<&[u8]>,
    challenge: &[u8],
) -> Zeroizing<Vec<u8>> {
    match session_key {
        None => Zeroizing::new(challenge.to_vec()),
        Some(ks) => hash.hmac(&hash.digest(ks), &[challenge]),
    }
}

/// R1 = HMAC(Kh, Ca || S1 || T_ID || SC_C || "HostHost" || NQNh || 00h || NQNc).
#[allow(clippy::too_many_arguments)]
pub fn host_response(
    hash: HashFunction,
    transformed_host_key: &[u8],
    augmented_challenge: &[u8],
    seqnum: u32,
    t_id: u16,
    sc_c: u8,
    hostnqn: &str,
    subnqn: &str,
) -> Zeroizing<Vec<u8>> {
    hash.hmac(
        transformed_host_key,
        &[
            augmented_challenge,
            &seqnum.to_le_bytes(),
            &t_id.to_le_bytes(),
            &[sc_c],
            b"HostHost",
            hostnqn.as_bytes(),
            &[0],
            subnqn.as_bytes(),
        ],
    )
}

/// R2 = HMAC(Kc, Ca2 || S2 || T_ID || 00h || "Controller" || NQNc || 00h || NQNh).
pub fn controller_response(
    hash: HashFunction,
    transformed_controller_key: &[u8],
    augmented_challenge: &[u8],
    seqnum: u32,
    t_id: u16,
    subnqn: &str,
    hostnqn: &str,
) -> Zeroizing<Vec<u8>> {
    hash.hmac(
        transformed_controller_key,
        &[
            augmented_challenge,
            &seqnum.to_le_bytes(),
            &t_id.to_le_bytes(),
            &[0],
            b"Controller",
            subnqn.as_bytes(),
            &[0],
            hostnqn.as_bytes(),
        ],
    )
}

fn random_bytes(len: usize) -> Zeroizing<Vec<u8>> {
    let mut bytes = Zeroizing::new(vec![0u8; len]);
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes
}

/// A random non-zero sequence number (0 means "no controller
/// authentication" in a Reply).
fn random_seqnum() -> u32 {
    loop {
        let mut bytes = [0u8; 4];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        let seqnum = u32::from_le_bytes(bytes);
        if seqnum != 0 {
            return seqnum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::hash::tests::hex;
    use super::super::messages::Descriptor;
    use super::*;

    const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:host-a";
    const SUBNQN: &str = "nqn.2016-06.io.shoal:vol0";

    fn secret(fill: u8, transform: Option<HashFunction>) -> Arc<Secret> {
        Arc::new(Secret::parse(&Secret::encode(&[fill; 32], transform)).expect("valid"))
    }

    fn authenticator(controller_key: bool) -> Authenticator {
        Authenticator::new(
            Credentials {
                hostnqn: HOSTNQN.into(),
                subnqn: SUBNQN.into(),
                host_key: secret(0x11, Some(HashFunction::Sha256)),
                controller_key: controller_key.then(|| secret(0x22, None)),
            },
            Policy::default(),
        )
    }

    fn negotiate(t_id: u16, hashes: &[u8], groups: &[u8]) -> Vec<u8> {
        Message::Negotiate {
            t_id,
            sc_c: 0,
            descriptors: vec![Descriptor {
                auth_id: DHCHAP_AUTH_ID,
                hash_ids: hashes.to_vec(),
                dh_group_ids: groups.to_vec(),
            }],
        }
        .encode()
    }

    /// A host written from the formulas above, as a test would: returns
    /// the Reply for `challenge`, the C2 it sent and the session key.
    struct TestHost {
        host_key: Arc<Secret>,
        controller_key: Option<Arc<Secret>>,
        c2: Vec<u8>,
        s2: u32,
        session_key: Option<Zeroizing<Vec<u8>>>,
    }

    impl TestHost {
        fn reply(&mut self, challenge: &[u8], bidirectional: bool) -> Vec<u8> {
            let Ok(Message::Challenge {
                t_id,
                hash_id,
                dh_group_id,
                seqnum,
                challenge,
                dh_value,
            }) = Message::decode(challenge)
            else {
                panic!("not a challenge");
            };
            let hash = HashFunction::from_id(hash_id).expect("hash");
            let group = DhGroup::from_id(dh_group_id).expect("group");
            let mine = EphemeralKey::generate(group);
            self.session_key = mine
                .as_ref()
                .map(|k| k.session_key(&dh_value).expect("valid"));
            let r1 = host_response(
                hash,
                &self.host_key.transformed(HOSTNQN),
                &augmented(
                    hash,
                    self.session_key.as_ref().map(|k| k.as_slice()),
                    &challenge,
                ),
                seqnum,
                t_id,
                0,
                HOSTNQN,
                SUBNQN,
            );
            self.c2 = vec![0x77; hash.output_len()];
            self.s2 = 0x1234_5678;
            Message::Reply {
                t_id,
                response: r1.to_vec(),
                controller_challenge: bidirectional.then(|| self.c2.clone()),
                seqnum: if bidirectional { self.s2 } else { 0 },
                dh_value: mine.map(|k| k.public().to_vec()).unwrap_or_default(),
            }
            .encode()
        }

        fn expected_r2(&self, hash: HashFunction, t_id: u16) -> Vec<u8> {
            let key = self.controller_key.as_ref().expect("controller key");
            controller_response(
                hash,
                &key.transformed(SUBNQN),
                &augmented(
                    hash,
                    self.session_key.as_ref().map(|k| k.as_slice()),
                    &self.c2,
                ),
                self.s2,
                t_id,
                SUBNQN,
                HOSTNQN,
            )
            .to_vec()
        }
    }

    fn host(fill: u8) -> TestHost {
        TestHost {
            host_key: secret(fill, Some(HashFunction::Sha256)),
            controller_key: Some(secret(0x22, None)),
            c2: vec![],
            s2: 0,
            session_key: None,
        }
    }

    fn data(outcome: ReceiveOutcome) -> Vec<u8> {
        match outcome {
            ReceiveOutcome::Data(bytes) => bytes,
            other => panic!("{other:?}"),
        }
    }

    /// Values computed from the spec's formulas with Python's hmac and
    /// hashlib, independently of this code.
    #[test]
    fn responses_match_known_answers() {
        let kh = [0x11u8; 32];
        let c1 = [0xa5u8; 32];
        let r1 = host_response(HashFunction::Sha256, &kh, &c1, 1, 2, 0, HOSTNQN, SUBNQN);
        assert_eq!(hex(&r1), KAT_R1_SHA256);
        let r2 = controller_response(HashFunction::Sha256, &kh, &c1, 3, 2, SUBNQN, HOSTNQN);
        assert_eq!(hex(&r2), KAT_R2_SHA256);
        let ca = augmented(HashFunction::Sha512, Some(&[0x42u8; 256]), &[0x5au8; 64]);
        assert_eq!(hex(&ca), KAT_CA_SHA512);
        let r1 = host_response(
            HashFunction::Sha384,
            &[0x33; 48],
            &[0x5a; 48],
            0xffff_ffff,
            0xbeef,
            0,
            HOSTNQN,
            SUBNQN,
        );
        assert_eq!(hex(&r1), KAT_R1_SHA384);
    }

    const KAT_R1_SHA256: &str = "ca6385011ac9a8ae6b0b67f43048e42f4acdcd8dc4f7cab0609369045841b9f9";
    const KAT_R2_SHA256: &str = "e7daaa2517c0100d52b547062b748e51be2d89203ea2e466082f00b6d88ad2eb";
    const KAT_CA_SHA512: &str = "64948d0e7e421b25ac1698ed22037aa2ff90b00b7f0f9ae927580c64f01704903cebf59641b81f5c5e8e24898ae5f3ff048bb5330896572fd6516a0d00abe20f";
    const KAT_R1_SHA384: &str = "d4bc5adc5435c5e22f45552e095d27aa37c661026ee091a0044df9dca5c8d39a5d29685c1519aea282e57c588992b6d1";

    #[test]
    fn the_right_key_authenticates_with_the_null_group() {
        let mut auth = authenticator(false);
        auth.on_send(&negotiate(5, &[1], &[0]));
        let challenge = data(auth.on_receive(4096));
        assert!(!auth.authenticated());
        let mut host = host(0x11);
        auth.on_send(&host.reply(&challenge, false));
        let success = data(auth.on_receive(4096));
        assert_eq!(
            Message::decode(&success),
            Ok(Message::Success1 {
                t_id: 5,
                hash_len: 32,
                response: None
            })
        );
        assert!(auth.authenticated());
    }

    #[test]
    fn bidirectional_authentication_with_a_dh_group() {
        let mut auth = authenticator(true);
        auth.on_send(&negotiate(9, &[3], &[1]));
        let challenge = data(auth.on_receive(4096));
        let Ok(Message::Challenge {
            dh_value, hash_id, ..
        }) = Message::decode(&challenge)
        else {
            panic!()
        };
        assert_eq!((dh_value.len(), hash_id), (256, 3));
        let mut host = host(0x11);
        auth.on_send(&host.reply(&challenge, true));
        let success = data(auth.on_receive(4096));
        let Ok(Message::Success1 {
            response: Some(r2), ..
        }) = Message::decode(&success)
        else {
            panic!("{success:?}")
        };
        assert_eq!(r2, host.expected_r2(HashFunction::Sha512, 9));
        // Not yet: the host has not accepted the controller's response.
        assert!(!auth.authenticated());
        auth.on_send(&Message::Success2 { t_id: 9 }.encode());
        assert!(auth.authenticated());
    }

    #[test]
    fn a_wrong_key_gets_failure1() {
        let mut auth = authenticator(false);
        auth.on_send(&negotiate(1, &[1, 2, 3], &[0, 1]));
        let challenge = data(auth.on_receive(4096));
        auth.on_send(&host(0x99).reply(&challenge, false));
        let failure = data(auth.on_receive(4096));
        assert_eq!(
            Message::decode(&failure),
            Ok(Message::Failure1 {
                t_id: 1,
                explanation: explanation::FAILED
            })
        );
        assert!(!auth.authenticated());
    }

    #[test]
    fn a_controller_key_mismatch_is_seen_by_the_host() {
        let mut auth = authenticator(true);
        auth.on_send(&negotiate(2, &[1], &[0]));
        let challenge = data(auth.on_receive(4096));
        let mut host = host(0x11);
        host.controller_key = Some(secret(0x23, None));
        auth.on_send(&host.reply(&challenge, true));
        let Ok(Message::Success1 {
            response: Some(r2), ..
        }) = Message::decode(&data(auth.on_receive(4096)))
        else {
            panic!()
        };
        assert_ne!(r2, host.expected_r2(HashFunction::Sha256, 2));
        auth.on_send(
            &Message::Failure2 {
                t_id: 2,
                explanation: explanation::FAILED,
            }
            .encode(),
        );
        assert!(!auth.authenticated());
    }

    #[test]
    fn bidirectional_without_a_controller_key_fails() {
        let mut auth = authenticator(false);
        auth.on_send(&negotiate(2, &[1], &[0]));
        let challenge = data(auth.on_receive(4096));
        auth.on_send(&host(0x11).reply(&challenge, true));
        let failure = Message::decode(&data(auth.on_receive(4096)));
        assert!(matches!(failure, Ok(Message::Failure1 { .. })));
        assert!(!auth.authenticated());
    }

    #[test]
    fn replayed_and_out_of_order_messages_fail() {
        // A reply recorded from one transaction does not pass another:
        // the new challenge and sequence number differ.
        let mut auth = authenticator(false);
        auth.on_send(&negotiate(3, &[1], &[0]));
        let challenge = data(auth.on_receive(4096));
        let recorded = host(0x11).reply(&challenge, false);
        auth.on_send(&recorded);
        data(auth.on_receive(4096));
        assert!(auth.authenticated());
        let mut fresh = authenticator(false);
        fresh.on_send(&negotiate(3, &[1], &[0]));
        data(fresh.on_receive(4096));
        fresh.on_send(&recorded);
        assert!(matches!(
            Message::decode(&data(fresh.on_receive(4096))),
            Ok(Message::Failure1 {
                explanation: explanation::FAILED,
                ..
            })
        ));
        assert!(!fresh.authenticated());

        // A Reply before any challenge, Success2 without Success1, a
        // Receive with nothing due, a wrong transaction ID.
        let mut auth = authenticator(true);
        auth.on_send(&recorded);
        assert!(matches!(
            Message::decode(&data(auth.on_receive(4096))),
            Ok(Message::Failure1 {
                explanation: explanation::INCORRECT_MESSAGE,
                ..
            })
        ));
        assert!(matches!(
            Message::decode(&data(auth.on_receive(4096))),
            Ok(Message::Failure1 { .. })
        ));
        auth.on_send(&Message::Success2 { t_id: 0 }.encode());
        assert!(!auth.authenticated());
        let mut auth = authenticator(false);
        auth.on_send(&negotiate(4, &[1], &[0]));
        let challenge = data(auth.on_receive(4096));
        let mut reply = host(0x11).reply(&challenge, false);
        reply[4] ^= 1;
        auth.on_send(&reply);
        assert!(matches!(
            Message::decode(&data(auth.on_receive(4096))),
            Ok(Message::Failure1 {
                explanation: explanation::INCORRECT_PAYLOAD,
                ..
            })
        ));
        assert!(!auth.authenticated());
        // Too many failures exhaust the queue.
        assert!(!auth.exhausted());
        for _ in 1..MAX_FAILED_TRANSACTIONS {
            auth.on_send(&reply);
            data(auth.on_receive(4096));
        }
        assert!(auth.exhausted());
    }

    #[test]
    fn negotiation_picks_allowed_algorithms_or_fails() {
        let mut auth = authenticator(false);
        auth.on_send(&negotiate(1, &[1, 3], &[0, 5, 1]));
        let Ok(Message::Challenge {
            hash_id,
            dh_group_id,
            ..
        }) = Message::decode(&data(auth.on_receive(4096)))
        else {
            panic!()
        };
        // The strongest hash, the cheapest real DH exchange.
        assert_eq!((hash_id, dh_group_id), (3, 1));
        for (hashes, groups, why) in [
            (&[9u8][..], &[0u8][..], explanation::HASH_UNUSABLE),
            (&[1], &[9], explanation::DHGROUP_UNUSABLE),
        ] {
            let mut auth = authenticator(false);
            auth.on_send(&negotiate(1, hashes, groups));
            assert_eq!(
                Message::decode(&data(auth.on_receive(4096))),
                Ok(Message::Failure1 {
                    t_id: 1,
                    explanation: why
                })
            );
        }
        // Secure channel concatenation is not offered.
        let mut auth = authenticator(false);
        let mut bytes = negotiate(1, &[1], &[0]);
        bytes[6] = 1;
        auth.on_send(&bytes);
        assert_eq!(
            Message::decode(&data(auth.on_receive(4096))),
            Ok(Message::Failure1 {
                t_id: 1,
                explanation: explanation::CONCAT_MISMATCH
            })
        );
        // A policy limits the choice.
        let mut auth = Authenticator::new(
            authenticator(false).credentials,
            Policy {
                hashes: vec![HashFunction::Sha256],
                dh_groups: vec![DhGroup::Null],
            },
        );
        auth.on_send(&negotiate(1, &[3], &[0]));
        assert!(matches!(
            Message::decode(&data(auth.on_receive(4096))),
            Ok(Message::Failure1 {
                explanation: explanation::HASH_UNUSABLE,
                ..
            })
        ));
    }

    #[test]
    fn restarting_without_end_exhausts_the_queue() {
        let mut auth = authenticator(false);
        for _ in 0..MAX_FAILED_TRANSACTIONS {
            assert!(!auth.exhausted());
            auth.on_send(&negotiate(1, &[1], &[1]));
            data(auth.on_receive(4096));
        }
        auth.on_send(&negotiate(1, &[1], &[1]));
        assert!(auth.exhausted());
        // A completed transaction is not abandoned: re-authentication
        // of an authenticated queue may restart freely.
        let mut auth = authenticator(false);
        for _ in 0..2 * MAX_FAILED_TRANSACTIONS {
            auth.on_send(&negotiate(1, &[1], &[0]));
            let challenge = data(auth.on_receive(4096));
            auth.on_send(&host(0x11).reply(&challenge, false));
            data(auth.on_receive(4096));
            assert!(auth.authenticated() && !auth.exhausted());
        }
    }

    #[test]
    fn a_small_allocation_length_fails_the_transaction() {
        let mut auth = authenticator(false);
        auth.on_send(&negotiate(1, &[1], &[1]));
        assert_eq!(
            auth.on_receive(64),
            ReceiveOutcome::TooSmall {
                needed: 16 + 32 + 256
            }
        );
        assert!(!auth.authenticated());
    }

    #[test]
    fn garbage_is_a_failure_not_a_panic() {
        let mut auth = authenticator(true);
        for len in 0..80 {
            auth.on_send(&vec![0xffu8; len]);
            auth.on_send(&vec![0x01u8; len]);
            let _ = auth.on_receive(4096);
        }
        assert!(!auth.authenticated());
    }
}
