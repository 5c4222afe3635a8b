//! The Diffie-Hellman groups DH-HMAC-CHAP negotiates (NVMe Base 2.0
//! §8.13.5, "DH group identifiers"): the null group (no exchange) and the
//! finite-field groups ffdhe2048 to ffdhe8192 of RFC 7919 (generator 2).
//!
//! Values travel big-endian, padded to the length of the group's prime;
//! the session key is g^xy mod p, padded the same way.

use std::sync::OnceLock;

use num_bigint::BigUint;
use zeroize::Zeroizing;

/// A DH group, by its identifier on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DhGroup {
    Null,
    Ffdhe2048,
    Ffdhe3072,
    Ffdhe4096,
    Ffdhe6144,
    Ffdhe8192,
}

/// Bits of the private exponent per group: twice the group's estimated
/// strength (RFC 7919 §5.2 and appendix A give 103-200 bits of strength
/// and 225-400-bit minimum exponents), so a short exponent costs nothing
/// in security and keeps one exchange to milliseconds.
fn exponent_bits(group: DhGroup) -> usize {
    match group {
        DhGroup::Null => 0,
        DhGroup::Ffdhe2048 => 256,
        DhGroup::Ffdhe3072 => 320,
        DhGroup::Ffdhe4096 => 384,
        DhGroup::Ffdhe6144 => 448,
        DhGroup::Ffdhe8192 => 512,
    }
}

impl DhGroup {
    /// Every group, in the order the controller prefers them when a host
    /// offers several: the cheapest real exchange first, the null group
    /// last. The exponentiations run on the reactor thread and grow with
    /// the cube of the prime's size (debug build: 17 ms per step for
    /// ffdhe2048, 380 ms for ffdhe8192), and ffdhe2048 already gives the
    /// challenge about 100 bits of strength on top of the secret's;
    /// `nvmf_set_config dhchap_dhgroups` restricts the choice to larger
    /// groups where wanted.
    pub const ALL: [DhGroup; 6] = [
        DhGroup::Ffdhe2048,
        DhGroup::Ffdhe3072,
        DhGroup::Ffdhe4096,
        DhGroup::Ffdhe6144,
        DhGroup::Ffdhe8192,
        DhGroup::Null,
    ];

    pub fn id(self) -> u8 {
        match self {
            DhGroup::Null => 0x00,
            DhGroup::Ffdhe2048 => 0x01,
            DhGroup::Ffdhe3072 => 0x02,
            DhGroup::Ffdhe4096 => 0x03,
            DhGroup::Ffdhe6144 => 0x04,
            DhGroup::Ffdhe8192 => 0x05,
        }
    }

    pub fn from_id(id: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.id() == id)
    }

    /// The name SPDK's `dhchap_dhgroups` option uses.
    pub fn name(self) -> &'static str {
        match self {
            DhGroup::Null => "null",
            DhGroup::Ffdhe2048 => "ffdhe2048",
            DhGroup::Ffdhe3072 => "ffdhe3072",
            DhGroup::Ffdhe4096 => "ffdhe4096",
            DhGroup::Ffdhe6144 => "ffdhe6144",
            DhGroup::Ffdhe8192 => "ffdhe8192",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.name() == name)
    }

    /// Length of a DH value (and of the session key) in bytes: 0 for null.
    pub fn value_len(self) -> usize {
        match self {
            DhGroup::Null => 0,
            DhGroup::Ffdhe2048 => 256,
            DhGroup::Ffdhe3072 => 384,
            DhGroup::Ffdhe4096 => 512,
            DhGroup::Ffdhe6144 => 768,
            DhGroup::Ffdhe8192 => 1024,
        }
    }

    fn prime(self) -> Option<&'static BigUint> {
        static PRIMES: [OnceLock<BigUint>; 5] = [const { OnceLock::new() }; 5];
        let (slot, hex) = match self {
            DhGroup::Null => return None,
            DhGroup::Ffdhe2048 => (0, FFDHE2048_P),
            DhGroup::Ffdhe3072 => (1, FFDHE3072_P),
            DhGroup::Ffdhe4096 => (2, FFDHE4096_P),
            DhGroup::Ffdhe6144 => (3, FFDHE6144_P),
            DhGroup::Ffdhe8192 => (4, FFDHE8192_P),
        };
        Some(PRIMES[slot].get_or_init(|| {
            BigUint::parse_bytes(hex.concat().as_bytes(), 16).expect("the RFC 7919 primes are hex")
        }))
    }
}

/// Why a peer's DH value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhError {
    #[error("the DH value is {got} bytes; the group needs {expected}")]
    Length { expected: usize, got: usize },
    #[error("the DH value is outside 2..p-2")]
    OutOfRange,
    #[error("the null group has no DH exchange")]
    NullGroup,
}

/// One side's ephemeral key: a random exponent x and g^x mod p.
pub struct EphemeralKey {
    group: DhGroup,
    exponent: Zeroizing<Vec<u8>>,
    public: Vec<u8>,
}

impl EphemeralKey {
    /// A fresh key for `group` (not the null group), or `None` for it.
    pub fn generate(group: DhGroup) -> Option<Self> {
        let p = group.prime()?;
        let mut exponent = Zeroizing::new(vec![0u8; exponent_bits(group) / 8]);
        getrandom::fill(&mut exponent).expect("the OS random source works");
        // Never 0 or 1: the top byte is made non-zero.
        exponent[0] |= 0x80;
        let x = BigUint::from_bytes_be(&exponent);
        let public = pad(&BigUint::from(2u32).modpow(&x, p), group.value_len());
        Some(Self {
            group,
            exponent,
            public,
        })
    }

    /// g^x mod p, padded to the prime's length.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// The session key (g^y)^x mod p from the peer's value g^y, padded to
    /// the prime's length. Values 0, 1 and p-1 (and anything >= p) are
    /// refused: they would force a known session key.
    pub fn session_key(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, DhError> {
        let p = self.group.prime().ok_or(DhError::NullGroup)?;
        let expected = self.group.value_len();
        if peer.len() != expected {
            return Err(DhError::Length {
                expected,
                got: peer.len(),
            });
        }
        let y = BigUint::from_bytes_be(peer);
        let one = BigUint::from(1u32);
        if y <= one || y >= p - &one {
            return Err(DhError::OutOfRange);
        }
        let x = BigUint::from_bytes_be(&self.exponent);
        Ok(Zeroizing::new(pad(&y.modpow(&x, p), expected)))
    }
}

/// Big-endian bytes of `value`, left-padded with zeros to `len`.
fn pad(value: &BigUint, len: usize) -> Vec<u8> {
    let bytes = value.to_bytes_be();
    let mut out = vec![0u8; len.saturating_sub(bytes.len())];
    out.extend_from_slice(&bytes);
    out
}

/// RFC 7919 ffdhe2048: p, big-endian hex (generator 2).
const FFDHE2048_P: &[&str] = &[
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695",
    "A9E13641146433FBCC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617A",
    "D3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935",
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797A",
    "BC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4",
    "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61",
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005",
    "C58EF1837D1683B2C6F34A26C1B2EFFA886B423861285C97FFFFFFFFFFFFFFFF",
];

/// RFC 7919 ffdhe3072: p, big-endian hex (generator 2).
const FFDHE3072_P: &[&str] = &[
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695",
    "A9E13641146433FBCC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617A",
    "D3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935",
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797A",
    "BC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4",
    "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61",
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005",
    "C58EF1837D1683B2C6F34A26C1B2EFFA886B4238611FCFDCDE355B3B6519035B",
    "BC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE598CB0FAC186D91C",
    "AEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF",
    "5CAE82AB9C9DF69EE86D2BC522363A0DABC521979B0DEADA1DBF9A42D5C4484E",
    "0ABCD06BFA53DDEF3C1B20EE3FD59D7C25E41D2B66C62E37FFFFFFFFFFFFFFFF",
];

/// RFC 7919 ffdhe4096: p, big-endian hex (generator 2).
const FFDHE4096_P: &[&str] = &[
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695",
    "A9E13641146433FBCC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617A",
    "D3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935",
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797A",
    "BC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4",
    "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61",
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005",
    "C58EF1837D1683B2C6F34A26C1B2EFFA886B4238611FCFDCDE355B3B6519035B",
    "BC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE598CB0FAC186D91C",
    "AEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF",
    "5CAE82AB9C9DF69EE86D2BC522363A0DABC521979B0DEADA1DBF9A42D5C4484E",
    "0ABCD06BFA53DDEF3C1B20EE3FD59D7C25E41D2B669E1EF16E6F52C3164DF4FB",
    "7930E9E4E58857B6AC7D5F42D69F6D187763CF1D5503400487F55BA57E31CC7A",
    "7135C886EFB4318AED6A1E012D9E6832A907600A918130C46DC778F971AD0038",
    "092999A333CB8B7A1A1DB93D7140003C2A4ECEA9F98D0ACC0A8291CDCEC97DCF",
    "8EC9B55A7F88A46B4DB5A851F44182E1C68A007E5E655F6AFFFFFFFFFFFFFFFF",
];

/// RFC 7919 ffdhe6144: p, big-endian hex (generator 2).
const FFDHE6144_P: &[&str] = &[
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695",
    "A9E13641146433FBCC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617A",
    "D3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935",
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797A",
    "BC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4",
    "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61",
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005",
    "C58EF1837D1683B2C6F34A26C1B2EFFA886B4238611FCFDCDE355B3B6519035B",
    "BC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE598CB0FAC186D91C",
    "AEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF",
    "5CAE82AB9C9DF69EE86D2BC522363A0DABC521979B0DEADA1DBF9A42D5C4484E",
    "0ABCD06BFA53DDEF3C1B20EE3FD59D7C25E41D2B669E1EF16E6F52C3164DF4FB",
    "7930E9E4E58857B6AC7D5F42D69F6D187763CF1D5503400487F55BA57E31CC7A",
    "7135C886EFB4318AED6A1E012D9E6832A907600A918130C46DC778F971AD0038",
    "092999A333CB8B7A1A1DB93D7140003C2A4ECEA9F98D0ACC0A8291CDCEC97DCF",
    "8EC9B55A7F88A46B4DB5A851F44182E1C68A007E5E0DD9020BFD64B645036C7A",
    "4E677D2C38532A3A23BA4442CAF53EA63BB454329B7624C8917BDD64B1C0FD4C",
    "B38E8C334C701C3ACDAD0657FCCFEC719B1F5C3E4E46041F388147FB4CFDB477",
    "A52471F7A9A96910B855322EDB6340D8A00EF092350511E30ABEC1FFF9E3A26E",
    "7FB29F8C183023C3587E38DA0077D9B4763E4E4B94B2BBC194C6651E77CAF992",
    "EEAAC0232A281BF6B3A739C1226116820AE8DB5847A67CBEF9C9091B462D538C",
    "D72B03746AE77F5E62292C311562A846505DC82DB854338AE49F5235C95B9117",
    "8CCF2DD5CACEF403EC9D1810C6272B045B3B71F9DC6B80D63FDD4A8E9ADB1E69",
    "62A69526D43161C1A41D570D7938DAD4A40E329CD0E40E65FFFFFFFFFFFFFFFF",
];

/// RFC 7919 ffdhe8192: p, big-endian hex (generator 2).
const FFDHE8192_P: &[&str] = &[
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695",
    "A9E13641146433FBCC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617A",
    "D3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935",
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797A",
    "BC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4",
    "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61",
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005",
    "C58EF1837D1683B2C6F34A26C1B2EFFA886B4238611FCFDCDE355B3B6519035B",
    "BC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE598CB0FAC186D91C",
    "AEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF",
    "5CAE82AB9C9DF69EE86D2BC522363A0DABC521979B0DEADA1DBF9A42D5C4484E",
    "0ABCD06BFA53DDEF3C1B20EE3FD59D7C25E41D2B669E1EF16E6F52C3164DF4FB",
    "7930E9E4E58857B6AC7D5F42D69F6D187763CF1D5503400487F55BA57E31CC7A",
    "7135C886EFB4318AED6A1E012D9E6832A907600A918130C46DC778F971AD0038",
    "092999A333CB8B7A1A1DB93D7140003C2A4ECEA9F98D0ACC0A8291CDCEC97DCF",
    "8EC9B55A7F88A46B4DB5A851F44182E1C68A007E5E0DD9020BFD64B645036C7A",
    "4E677D2C38532A3A23BA4442CAF53EA63BB454329B7624C8917BDD64B1C0FD4C",
    "B38E8C334C701C3ACDAD0657FCCFEC719B1F5C3E4E46041F388147FB4CFDB477",
    "A52471F7A9A96910B855322EDB6340D8A00EF092350511E30ABEC1FFF9E3A26E",
    "7FB29F8C183023C3587E38DA0077D9B4763E4E4B94B2BBC194C6651E77CAF992",
    "EEAAC0232A281BF6B3A739C1226116820AE8DB5847A67CBEF9C9091B462D538C",
    "D72B03746AE77F5E62292C311562A846505DC82DB854338AE49F5235C95B9117",
    "8CCF2DD5CACEF403EC9D1810C6272B045B3B71F9DC6B80D63FDD4A8E9ADB1E69",
    "62A69526D43161C1A41D570D7938DAD4A40E329CCFF46AAA36AD004CF600C838",
    "1E425A31D951AE64FDB23FCEC9509D43687FEB69EDD1CC5E0B8CC3BDF64B10EF",
    "86B63142A3AB8829555B2F747C932665CB2C0F1CC01BD70229388839D2AF05E4",
    "54504AC78B7582822846C0BA35C35F5C59160CC046FD8251541FC68C9C86B022",
    "BB7099876A460E7451A8A93109703FEE1C217E6C3826E52C51AA691E0E423CFC",
    "99E9E31650C1217B624816CDAD9A95F9D5B8019488D9C0A0A1FE3075A577E231",
    "83F81D4A3F2FA4571EFC8CE0BA8A4FE8B6855DFE72B0A66EDED2FBABFBE58A30",
    "FAFABE1C5D71A87E2F741EF8C1FE86FEA6BBFDE530677F0D97D11D49F7A8443D",
    "0822E506A9F4614E011E2A94838FF88CD68C8BB7C5C6424CFFFFFFFFFFFFFFFF",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_reach_the_same_session_key() {
        for group in [DhGroup::Ffdhe2048, DhGroup::Ffdhe3072] {
            let a = EphemeralKey::generate(group).expect("not null");
            let b = EphemeralKey::generate(group).expect("not null");
            assert_eq!(a.public().len(), group.value_len());
            let ka = a.session_key(b.public()).expect("valid");
            let kb = b.session_key(a.public()).expect("valid");
            assert_eq!(ka.as_slice(), kb.as_slice());
            assert_ne!(a.public(), b.public());
        }
        assert!(EphemeralKey::generate(DhGroup::Null).is_none());
    }

    #[test]
    fn the_primes_have_the_rfc_7919_shape() {
        for group in DhGroup::ALL.into_iter().filter(|g| *g != DhGroup::Null) {
            let p = group.prime().expect("prime");
            assert_eq!(p.bits() as usize, group.value_len() * 8, "{group:?}");
            // RFC 7919: the top and bottom 64 bits are all ones.
            let bytes = p.to_bytes_be();
            assert!(
                bytes[..8]
                    .iter()
                    .chain(&bytes[bytes.len() - 8..])
                    .all(|&b| b == 0xff)
            );
        }
        // ffdhe2048 starts FFFFFFFF FFFFFFFF ADF85458 A2BB4A9A (RFC 7919 A.1).
        assert!(FFDHE2048_P[0].starts_with("FFFFFFFFFFFFFFFFADF85458A2BB4A9A"));
    }

    #[test]
    fn degenerate_peer_values_are_refused() {
        let key = EphemeralKey::generate(DhGroup::Ffdhe2048).expect("not null");
        let len = DhGroup::Ffdhe2048.value_len();
        let mut one = vec![0u8; len];
        one[len - 1] = 1;
        assert_eq!(key.session_key(&one).unwrap_err(), DhError::OutOfRange);
        assert_eq!(
            key.session_key(&vec![0u8; len]).unwrap_err(),
            DhError::OutOfRange
        );
        assert_eq!(
            key.session_key(&vec![0xffu8; len]).unwrap_err(),
            DhError::OutOfRange
        );
        let p_minus_1 = pad(&(DhGroup::Ffdhe2048.prime().unwrap() - 1u32), len);
        assert_eq!(
            key.session_key(&p_minus_1).unwrap_err(),
            DhError::OutOfRange
        );
        assert!(matches!(
            key.session_key(&[2u8; 10]),
            Err(DhError::Length { .. })
        ));
    }

    #[test]
    fn ids_round_trip() {
        for group in DhGroup::ALL {
            assert_eq!(DhGroup::from_id(group.id()), Some(group));
            assert_eq!(DhGroup::from_name(group.name()), Some(group));
        }
        assert_eq!(DhGroup::from_id(6), None);
    }
}
