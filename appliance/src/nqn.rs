//! NVMe Qualified Names as NVMe Base 2.0 section 4.5 allows them: the
//! dataplane checks the NQNs its RPCs name, the management service the
//! host NQNs administrators give it, with the same rules.

/// NQNs are at most 223 bytes.
pub const MAX_NQN_BYTES: usize = 223;

/// `nqn.yyyy-mm.<reverse domain>[:<name>]` or
/// `nqn.2014-08.org.nvmexpress:uuid:<uuid>`, at most 223 bytes, no control
/// characters. The error says which rule failed.
pub fn check(nqn: &str) -> Result<(), String> {
    if nqn.len() > MAX_NQN_BYTES {
        return Err(format!(
            "NQN is {} bytes; the limit is {MAX_NQN_BYTES}",
            nqn.len()
        ));
    }
    let uuid_form = nqn
        .strip_prefix("nqn.2014-08.org.nvmexpress:uuid:")
        .is_some_and(is_uuid);
    let date = nqn.get(4..11).unwrap_or("");
    let domain_form = nqn.starts_with("nqn.")
        && date.len() == 7
        && date.as_bytes()[4] == b'-'
        && date[..4].bytes().all(|b| b.is_ascii_digit())
        && date[5..].bytes().all(|b| b.is_ascii_digit())
        && nqn.as_bytes().get(11) == Some(&b'.')
        && nqn.len() > 12;
    if !(uuid_form || domain_form) || nqn.chars().any(|c| c.is_control()) {
        return Err(format!(
            "{nqn:?} is not an NQN (nqn.yyyy-mm.reverse.domain:name or nqn.2014-08.org.nvmexpress:uuid:<uuid>)"
        ));
    }
    Ok(())
}

/// The 8-4-4-4-12 hex form.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nqns_are_checked() {
        assert!(check("nqn.2016-06.io.spdk:cnode1").is_ok());
        assert!(
            check("nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427").is_ok()
        );
        assert!(check("nqn.2014-08.org.nvmexpress.discovery").is_ok());
        assert!(check("iqn.2016-06.io.spdk:x").is_err());
        assert!(check("nqn.16-06.io").is_err());
        assert!(check(&format!("nqn.2016-06.io.spdk:{}", "x".repeat(300))).is_err());
        assert!(check("nqn.2016-06.io.spdk:a\u{7}b").is_err());
    }
}
