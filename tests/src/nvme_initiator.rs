//! A small NVMe/TCP host written from the specifications, for tests and
//! benchmarks: raw PDUs over a blocking socket. It does what the Linux
//! initiator does on the wire (ICReq, Fabrics Connect, property access,
//! admin and I/O commands with in-capsule data, R2T/H2CData and C2HData,
//! digests) and lets tests send PDUs no well-behaved host would.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub const IC_REQ: u8 = 0x00;
pub const IC_RESP: u8 = 0x01;
pub const H2C_TERM_REQ: u8 = 0x02;
pub const C2H_TERM_REQ: u8 = 0x03;
pub const CAPSULE_CMD: u8 = 0x04;
pub const CAPSULE_RESP: u8 = 0x05;
pub const H2C_DATA: u8 = 0x06;
pub const C2H_DATA: u8 = 0x07;
pub const R2T: u8 = 0x09;

pub const HOST_ID: [u8; 16] = *b"shoal-test-host!";

/// A received PDU: common header fields, the PDU-specific header and data.
#[derive(Debug, Clone)]
pub struct Pdu {
    pub pdu_type: u8,
    pub flags: u8,
    pub hlen: u8,
    pub specific: Vec<u8>,
    pub data: Vec<u8>,
}

/// A completion queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cqe {
    pub dw0: u32,
    pub dw1: u32,
    pub sqhd: u16,
    pub sqid: u16,
    pub cid: u16,
    /// Status code type.
    pub sct: u8,
    /// Status code.
    pub sc: u8,
    pub dnr: bool,
}

impl Cqe {
    fn parse(bytes: &[u8]) -> Self {
        let status = u16::from_le_bytes([bytes[14], bytes[15]]);
        Self {
            dw0: u32::from_le_bytes(bytes[0..4].try_into().unwrap()),
            dw1: u32::from_le_bytes(bytes[4..8].try_into().unwrap()),
            sqhd: u16::from_le_bytes([bytes[8], bytes[9]]),
            sqid: u16::from_le_bytes([bytes[10], bytes[11]]),
            cid: u16::from_le_bytes([bytes[12], bytes[13]]),
            sct: ((status >> 9) & 0x7) as u8,
            sc: ((status >> 1) & 0xff) as u8,
            dnr: status >> 15 == 1,
        }
    }

    pub fn ok(&self) -> bool {
        self.sct == 0 && self.sc == 0
    }

    /// (SCT, SC), for assertions.
    pub fn status(&self) -> (u8, u8) {
        (self.sct, self.sc)
    }
}

/// A 64-byte command under construction.
#[derive(Clone, Copy)]
pub struct Sqe(pub [u8; 64]);

impl Sqe {
    pub fn new(opcode: u8) -> Self {
        let mut bytes = [0u8; 64];
        bytes[0] = opcode;
        // PSDT = 01b: SGL for data.
        bytes[1] = 1 << 6;
        Self(bytes)
    }

    pub fn fabrics(fctype: u8) -> Self {
        let mut sqe = Self::new(0x7f);
        sqe.0[1] = 0;
        sqe.0[4] = fctype;
        sqe
    }

    pub fn nsid(mut self, nsid: u32) -> Self {
        self.0[4..8].copy_from_slice(&nsid.to_le_bytes());
        self
    }

    pub fn cdw(mut self, n: usize, value: u32) -> Self {
        self.0[n * 4..n * 4 + 4].copy_from_slice(&value.to_le_bytes());
        self
    }

    pub fn byte(mut self, offset: usize, value: u8) -> Self {
        self.0[offset] = value;
        self
    }

    pub fn u16_at(mut self, offset: usize, value: u16) -> Self {
        self.0[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
        self
    }

    pub fn u32_at(mut self, offset: usize, value: u32) -> Self {
        self.0[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        self
    }

    pub fn u64_at(mut self, offset: usize, value: u64) -> Self {
        self.0[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
        self
    }

    /// Sets the data SGL: `identifier` 0x01 in-capsule, 0x5a transport.
    pub fn sgl(&mut self, identifier: u8, length: u32) {
        self.0[24..32].fill(0);
        self.0[32..36].copy_from_slice(&length.to_le_bytes());
        self.0[36..39].fill(0);
        self.0[39] = identifier;
    }

    pub fn set_cid(&mut self, cid: u16) {
        self.0[2..4].copy_from_slice(&cid.to_le_bytes());
    }
}

/// How a command's data travels.
pub enum Data<'a> {
    None,
    /// Host to controller, inside the command capsule.
    InCapsule(&'a [u8]),
    /// Host to controller, sent when the controller asks with R2T.
    OnRequest(&'a [u8]),
    /// Controller to host, this many bytes.
    Read(usize),
}

pub struct Initiator {
    stream: TcpStream,
    pub header_digest: bool,
    pub data_digest: bool,
    next_cid: u16,
    pub maxh2cdata: u32,
}

fn crc(data: &[u8]) -> [u8; 4] {
    crc32c::crc32c(data).to_le_bytes()
}

impl Initiator {
    /// Opens the TCP connection and exchanges ICReq/ICResp.
    pub fn connect(
        address: SocketAddr,
        header_digest: bool,
        data_digest: bool,
    ) -> std::io::Result<Self> {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        let mut initiator = Self {
            stream,
            header_digest,
            data_digest,
            next_cid: 0,
            maxh2cdata: 0,
        };
        let mut ic_req = [0u8; 128];
        ic_req[0] = IC_REQ;
        ic_req[2] = 128;
        ic_req[4..8].copy_from_slice(&128u32.to_le_bytes());
        ic_req[11] = u8::from(header_digest) | (u8::from(data_digest) << 1);
        initiator.stream.write_all(&ic_req)?;
        let resp = initiator.recv()?;
        if resp.pdu_type != IC_RESP {
            return Err(std::io::Error::other(format!(
                "expected ICResp, got PDU type {:#x}",
                resp.pdu_type
            )));
        }
        initiator.maxh2cdata = u32::from_le_bytes(resp.specific[4..8].try_into().unwrap());
        Ok(initiator)
    }

    /// A raw connection with nothing exchanged yet.
    pub fn raw(address: SocketAddr) -> std::io::Result<TcpStream> {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(stream)
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
    }

    /// Reads one PDU (checking digests when negotiated).
    pub fn recv(&mut self) -> std::io::Result<Pdu> {
        read_pdu(&mut self.stream, self.header_digest, self.data_digest)
    }

    /// Sends a PDU built from a type, flags, PDU-specific header and data,
    /// with digests as negotiated.
    pub fn send(
        &mut self,
        pdu_type: u8,
        flags: u8,
        specific: &[u8],
        data: &[u8],
    ) -> std::io::Result<()> {
        let bytes = build_pdu(
            pdu_type,
            flags,
            specific,
            data,
            self.header_digest,
            self.data_digest,
        );
        self.stream.write_all(&bytes)
    }

    fn cid(&mut self) -> u16 {
        self.next_cid = self.next_cid.wrapping_add(1);
        self.next_cid
    }

    /// Runs one command to completion: sends data as asked, collects
    /// C2HData. Returns the completion (synthesised from the SUCCESS flag
    /// when the controller used it) and the data read.
    pub fn command(&mut self, mut sqe: Sqe, data: Data<'_>) -> std::io::Result<(Cqe, Vec<u8>)> {
        let cid = self.cid();
        sqe.set_cid(cid);
        let in_capsule: &[u8] = match data {
            Data::None => {
                sqe.sgl(0x5a, 0);
                &[]
            }
            Data::InCapsule(bytes) => {
                sqe.sgl(0x01, bytes.len() as u32);
                bytes
            }
            Data::OnRequest(bytes) => {
                sqe.sgl(0x5a, bytes.len() as u32);
                &[]
            }
            Data::Read(len) => {
                sqe.sgl(0x5a, len as u32);
                &[]
            }
        };
        self.send(CAPSULE_CMD, 0, &sqe.0, in_capsule)?;
        let mut read = Vec::new();
        loop {
            let pdu = self.recv()?;
            match pdu.pdu_type {
                CAPSULE_RESP => {
                    let cqe = Cqe::parse(&pdu.specific);
                    return Ok((cqe, read));
                }
                C2H_DATA => {
                    let datao = u32::from_le_bytes(pdu.specific[4..8].try_into().unwrap()) as usize;
                    if read.len() < datao + pdu.data.len() {
                        read.resize(datao + pdu.data.len(), 0);
                    }
                    read[datao..datao + pdu.data.len()].copy_from_slice(&pdu.data);
                    if pdu.flags & 0x08 != 0 {
                        let cqe = Cqe {
                            dw0: 0,
                            dw1: 0,
                            sqhd: 0,
                            sqid: 0,
                            cid,
                            sct: 0,
                            sc: 0,
                            dnr: false,
                        };
                        return Ok((cqe, read));
                    }
                }
                R2T => {
                    let Data::OnRequest(bytes) = data else {
                        return Err(std::io::Error::other(
                            "R2T for a command without data to send",
                        ));
                    };
                    let cccid = u16::from_le_bytes([pdu.specific[0], pdu.specific[1]]);
                    let ttag = u16::from_le_bytes([pdu.specific[2], pdu.specific[3]]);
                    let r2to = u32::from_le_bytes(pdu.specific[4..8].try_into().unwrap()) as usize;
                    let r2tl = u32::from_le_bytes(pdu.specific[8..12].try_into().unwrap()) as usize;
                    let chunk = self.maxh2cdata.max(4096) as usize;
                    let mut offset = r2to;
                    while offset < r2to + r2tl {
                        let len = chunk.min(r2to + r2tl - offset);
                        let last = offset + len == r2to + r2tl;
                        let mut specific = [0u8; 16];
                        specific[0..2].copy_from_slice(&cccid.to_le_bytes());
                        specific[2..4].copy_from_slice(&ttag.to_le_bytes());
                        specific[4..8].copy_from_slice(&(offset as u32).to_le_bytes());
                        specific[8..12].copy_from_slice(&(len as u32).to_le_bytes());
                        self.send(
                            H2C_DATA,
                            if last { 0x04 } else { 0 },
                            &specific,
                            &bytes[offset..offset + len],
                        )?;
                        offset += len;
                    }
                }
                C2H_TERM_REQ => {
                    let fes = u16::from_le_bytes([pdu.specific[0], pdu.specific[1]]);
                    return Err(std::io::Error::other(format!(
                        "controller terminated the connection: FES {fes:#x}"
                    )));
                }
                other => {
                    return Err(std::io::Error::other(format!(
                        "unexpected PDU type {other:#x}"
                    )));
                }
            }
        }
    }

    /// Fabrics Connect. Returns the completion (DW0 = controller ID on the
    /// admin queue).
    pub fn fabric_connect(
        &mut self,
        qid: u16,
        sqsize: u16,
        cntlid: u16,
        subnqn: &str,
        hostnqn: &str,
        kato_ms: u32,
    ) -> std::io::Result<Cqe> {
        self.fabric_connect_with(qid, sqsize, cntlid, subnqn, hostnqn, kato_ms, false)
    }

    /// Fabrics Connect, optionally disabling SQ flow control (CATTR bit 2)
    /// as the Linux host does when discovery says the port supports it;
    /// the controller may then complete reads with the C2HData SUCCESS flag.
    #[allow(clippy::too_many_arguments)]
    pub fn fabric_connect_with(
        &mut self,
        qid: u16,
        sqsize: u16,
        cntlid: u16,
        subnqn: &str,
        hostnqn: &str,
        kato_ms: u32,
        disable_sqflow: bool,
    ) -> std::io::Result<Cqe> {
        let mut data = vec![0u8; 1024];
        data[0..16].copy_from_slice(&HOST_ID);
        data[16..18].copy_from_slice(&cntlid.to_le_bytes());
        data[256..256 + subnqn.len()].copy_from_slice(subnqn.as_bytes());
        data[512..512 + hostnqn.len()].copy_from_slice(hostnqn.as_bytes());
        let sqe = Sqe::fabrics(0x01)
            .u16_at(42, qid)
            .u16_at(44, sqsize)
            .byte(46, if disable_sqflow { 1 << 2 } else { 0 })
            .u32_at(48, kato_ms);
        Ok(self.command(sqe, Data::InCapsule(&data))?.0)
    }

    pub fn property_get(&mut self, offset: u32, eight_bytes: bool) -> std::io::Result<(Cqe, u64)> {
        let sqe = Sqe::fabrics(0x04)
            .byte(40, u8::from(eight_bytes))
            .u32_at(44, offset);
        let (cqe, _) = self.command(sqe, Data::None)?;
        Ok((cqe, u64::from(cqe.dw0) | (u64::from(cqe.dw1) << 32)))
    }

    pub fn property_set(&mut self, offset: u32, value: u32) -> std::io::Result<Cqe> {
        let sqe = Sqe::fabrics(0x00)
            .u32_at(44, offset)
            .u64_at(48, u64::from(value));
        Ok(self.command(sqe, Data::None)?.0)
    }

    /// Connect the admin queue and enable the controller, as a host does:
    /// returns the controller ID.
    pub fn start_admin(
        &mut self,
        subnqn: &str,
        hostnqn: &str,
        kato_ms: u32,
    ) -> std::io::Result<u16> {
        let cqe = self.fabric_connect(0, 31, 0xffff, subnqn, hostnqn, kato_ms)?;
        if !cqe.ok() {
            return Err(std::io::Error::other(format!("Connect failed: {cqe:?}")));
        }
        let cntlid = cqe.dw0 as u16;
        // CC: EN, IOSQES 6, IOCQES 4.
        let cqe = self.property_set(0x14, 1 | (6 << 16) | (4 << 20))?;
        if !cqe.ok() {
            return Err(std::io::Error::other(format!("enabling failed: {cqe:?}")));
        }
        Ok(cntlid)
    }

    pub fn identify(&mut self, cns: u8, nsid: u32) -> std::io::Result<(Cqe, Vec<u8>)> {
        self.command(
            Sqe::new(0x06).nsid(nsid).cdw(10, u32::from(cns)),
            Data::Read(4096),
        )
    }

    pub fn get_log_page(
        &mut self,
        lid: u8,
        len: usize,
        offset: u64,
    ) -> std::io::Result<(Cqe, Vec<u8>)> {
        let numd = (len / 4 - 1) as u32;
        let sqe = Sqe::new(0x02)
            .nsid(0xffff_ffff)
            .cdw(10, u32::from(lid) | ((numd & 0xffff) << 16))
            .cdw(11, numd >> 16)
            .cdw(12, offset as u32)
            .cdw(13, (offset >> 32) as u32);
        self.command(sqe, Data::Read(len))
    }

    pub fn read(
        &mut self,
        nsid: u32,
        slba: u64,
        blocks: u32,
        block_size: usize,
    ) -> std::io::Result<(Cqe, Vec<u8>)> {
        let sqe = Sqe::new(0x02)
            .nsid(nsid)
            .u64_at(40, slba)
            .cdw(12, blocks - 1);
        self.command(sqe, Data::Read(blocks as usize * block_size))
    }

    pub fn write(
        &mut self,
        nsid: u32,
        slba: u64,
        data: &[u8],
        block_size: usize,
        in_capsule: bool,
    ) -> std::io::Result<Cqe> {
        let blocks = (data.len() / block_size) as u32;
        let sqe = Sqe::new(0x01)
            .nsid(nsid)
            .u64_at(40, slba)
            .cdw(12, blocks - 1);
        let data = if in_capsule {
            Data::InCapsule(data)
        } else {
            Data::OnRequest(data)
        };
        Ok(self.command(sqe, data)?.0)
    }
}

/// Reads one PDU from `stream`.
pub fn read_pdu(
    stream: &mut impl Read,
    header_digest: bool,
    data_digest: bool,
) -> std::io::Result<Pdu> {
    let mut common = [0u8; 8];
    stream.read_exact(&mut common)?;
    let pdu_type = common[0];
    let flags = common[1];
    let hlen = common[2] as usize;
    let pdo = common[3] as usize;
    let plen = u32::from_le_bytes(common[4..8].try_into().unwrap()) as usize;
    if hlen < 8 || plen < hlen {
        return Err(std::io::Error::other(format!(
            "malformed PDU header {common:?}"
        )));
    }
    let mut rest = vec![0u8; plen - 8];
    stream.read_exact(&mut rest)?;
    let specific = rest[..hlen - 8].to_vec();
    let has_hdgst = flags & 0x01 != 0;
    let has_ddgst = flags & 0x02 != 0;
    let digestible = matches!(pdu_type, CAPSULE_RESP | C2H_DATA | R2T);
    if digestible && has_hdgst != header_digest {
        return Err(std::io::Error::other(
            "header digest flag does not match the negotiation",
        ));
    }
    let mut at = hlen - 8;
    if has_hdgst {
        let mut header = common.to_vec();
        header.extend_from_slice(&specific);
        if crc(&header) != rest[at..at + 4] {
            return Err(std::io::Error::other(
                "bad header digest from the controller",
            ));
        }
        at += 4;
    }
    let data_start = if pdo > 0 { pdo - 8 } else { at };
    let data_end = plen - 8 - if has_ddgst { 4 } else { 0 };
    let data = if data_end > data_start {
        rest[data_start..data_end].to_vec()
    } else {
        Vec::new()
    };
    if has_ddgst {
        if !data_digest {
            return Err(std::io::Error::other(
                "data digest the host did not ask for",
            ));
        }
        if crc(&data) != rest[data_end..data_end + 4] {
            return Err(std::io::Error::other("bad data digest from the controller"));
        }
    }
    Ok(Pdu {
        pdu_type,
        flags,
        hlen: hlen as u8,
        specific,
        data,
    })
}

/// Serialises a PDU with digests as asked.
pub fn build_pdu(
    pdu_type: u8,
    mut flags: u8,
    specific: &[u8],
    data: &[u8],
    header_digest: bool,
    data_digest: bool,
) -> Vec<u8> {
    let hlen = 8 + specific.len();
    let header_end = hlen + if header_digest { 4 } else { 0 };
    let data_digest = data_digest && !data.is_empty();
    if header_digest {
        flags |= 0x01;
    }
    if data_digest {
        flags |= 0x02;
    }
    let plen = header_end + data.len() + if data_digest { 4 } else { 0 };
    let mut out = Vec::with_capacity(plen);
    out.push(pdu_type);
    out.push(flags);
    out.push(hlen as u8);
    out.push(if data.is_empty() { 0 } else { header_end as u8 });
    out.extend_from_slice(&(plen as u32).to_le_bytes());
    out.extend_from_slice(specific);
    if header_digest {
        let digest = crc(&out);
        out.extend_from_slice(&digest);
    }
    out.extend_from_slice(data);
    if data_digest {
        out.extend_from_slice(&crc(data));
    }
    out
}
