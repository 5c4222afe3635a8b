//! A minimal NBD client for tests that need to control each request: the
//! fixed newstyle handshake with NBD_OPT_GO, simple replies, one request
//! at a time. Real clients (qemu, libnbd) cover the protocol's breadth.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;

/// Connects to `export` on `port` of the loopback address.
pub fn connect(port: u16, export: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut greeting = [0u8; 18];
    s.read_exact(&mut greeting).unwrap();
    s.write_all(&3u32.to_be_bytes()).unwrap(); // fixed newstyle, no zeroes
    let mut data = (export.len() as u32).to_be_bytes().to_vec();
    data.extend_from_slice(export.as_bytes());
    data.extend_from_slice(&0u16.to_be_bytes());
    let mut option = 0x4948_4156_454f_5054u64.to_be_bytes().to_vec();
    option.extend_from_slice(&7u32.to_be_bytes());
    option.extend_from_slice(&(data.len() as u32).to_be_bytes());
    option.extend_from_slice(&data);
    s.write_all(&option).unwrap();
    loop {
        let mut header = [0u8; 20];
        s.read_exact(&mut header).unwrap();
        let kind = u32::from_be_bytes(header[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(header[16..20].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        assert!(kind & 0x8000_0000 == 0, "option error {kind:#x}");
        if kind == 1 {
            return s;
        }
    }
}

/// A request header.
pub fn request(command: u16, cookie: u64, offset: u64, length: u32) -> Vec<u8> {
    let mut r = 0x2560_9513u32.to_be_bytes().to_vec();
    r.extend_from_slice(&0u16.to_be_bytes());
    r.extend_from_slice(&command.to_be_bytes());
    r.extend_from_slice(&cookie.to_be_bytes());
    r.extend_from_slice(&offset.to_be_bytes());
    r.extend_from_slice(&length.to_be_bytes());
    r
}

/// Reads a simple reply; returns (error, cookie).
pub fn simple_reply(s: &mut TcpStream) -> (u32, u64) {
    let mut reply = [0u8; 16];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(
        u32::from_be_bytes(reply[0..4].try_into().unwrap()),
        0x6744_6698
    );
    (
        u32::from_be_bytes(reply[4..8].try_into().unwrap()),
        u64::from_be_bytes(reply[8..16].try_into().unwrap()),
    )
}

/// Writes `data` at `offset` and waits for the reply's NBD error (0 = ok).
pub fn write(s: &mut TcpStream, cookie: u64, offset: u64, data: &[u8]) -> u32 {
    let mut message = request(CMD_WRITE, cookie, offset, data.len() as u32);
    message.extend_from_slice(data);
    s.write_all(&message).unwrap();
    let (error, echoed) = simple_reply(s);
    assert_eq!(echoed, cookie);
    error
}

/// As [`write`], but a connection that breaks (the server was killed) is
/// an `Err`, not a panic.
pub fn try_write(s: &mut TcpStream, cookie: u64, offset: u64, data: &[u8]) -> std::io::Result<u32> {
    let mut message = request(CMD_WRITE, cookie, offset, data.len() as u32);
    message.extend_from_slice(data);
    s.write_all(&message)?;
    let mut reply = [0u8; 16];
    s.read_exact(&mut reply)?;
    if reply[0..4] != 0x6744_6698u32.to_be_bytes() || reply[8..16] != cookie.to_be_bytes() {
        return Err(std::io::Error::other("not the reply to this write"));
    }
    Ok(u32::from_be_bytes(reply[4..8].try_into().expect("4 bytes")))
}

/// Reads `len` bytes at `offset`; `Err(error)` when the server refuses.
pub fn read(s: &mut TcpStream, cookie: u64, offset: u64, len: u32) -> Result<Vec<u8>, u32> {
    s.write_all(&request(CMD_READ, cookie, offset, len))
        .unwrap();
    let (error, echoed) = simple_reply(s);
    assert_eq!(echoed, cookie);
    if error != 0 {
        return Err(error);
    }
    let mut data = vec![0u8; len as usize];
    s.read_exact(&mut data).unwrap();
    Ok(data)
}
