//! Where push subscriptions may send events. A `Destination` is an
//! absolute http(s) URI without credentials in it (`user:pass@` would be
//! shown to every reader of the subscription and land in logs). Unless
//! `management.event_destinations_allow_local` says otherwise, it must not
//! reach loopback, link-local, unspecified, broadcast or multicast
//! addresses: the service would otherwise POST, on a client's behalf, to
//! services only the appliance itself can reach. Host names are checked
//! again when an event is delivered, on the addresses they resolve to
//! then.

use std::net::{IpAddr, SocketAddr};

use reqwest::Url;

/// What a destination may reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Loopback, link-local, unspecified and multicast addresses allowed.
    pub allow_local: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("an absolute http:// or https:// URI is expected")]
    NotHttp,
    #[error("a destination URI must not carry a user name or password")]
    Credentials,
    #[error(
        "loopback, link-local, unspecified and multicast destinations are refused \
         (management.event_destinations_allow_local)"
    )]
    Local,
}

/// Whether an address is one only this machine, or its link, reaches.
pub fn is_local(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                // 0.0.0.0/8 is "this network": Linux connects it locally.
                || v4.octets()[0] == 0
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unicast_link_local()
        }
    }
}

/// The destination URI, if `policy` lets events go there.
pub fn check(text: &str, policy: Policy) -> Result<Url, Refused> {
    let url = Url::parse(text).map_err(|_| Refused::NotHttp)?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(Refused::NotHttp);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refused::Credentials);
    }
    if !policy.allow_local {
        let host = url.host_str().unwrap_or_default();
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let local = match literal.parse::<IpAddr>() {
            Ok(ip) => is_local(ip),
            Err(_) => {
                let name = host.trim_end_matches('.').to_ascii_lowercase();
                name == "localhost" || name.ends_with(".localhost")
            }
        };
        if local {
            return Err(Refused::Local);
        }
    }
    Ok(url)
}

/// `text` fit to show or log: any user name and password replaced.
pub fn redacted(text: &str) -> String {
    match Url::parse(text) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        Ok(_) => text.to_string(),
        Err(_) => "<not a URI>".to_string(),
    }
}

/// The delivery clients' resolver: the system's, with local addresses
/// removed unless the policy allows them (a host name cannot be pointed
/// at loopback after the subscription was accepted).
pub struct Resolver {
    pub policy: Policy,
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_local = self.policy.allow_local;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|address| allow_local || !is_local(address.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!("{host} resolves to no address events may go to").into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_checked() {
        let strict = Policy::default();
        let open = Policy { allow_local: true };
        assert!(check("https://events.example/x", strict).is_ok());
        assert!(check("http://10.1.2.3:8080/x", strict).is_ok());
        assert_eq!(
            check("ftp://events.example/", strict),
            Err(Refused::NotHttp)
        );
        assert_eq!(check("not a uri", strict), Err(Refused::NotHttp));
        for credentials in ["https://u:p@events.example/", "https://u@events.example/"] {
            assert_eq!(check(credentials, open), Err(Refused::Credentials));
        }
        for local in [
            "http://127.0.0.1/",
            "http://127.9.9.9:80/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://169.254.169.254/latest",
            "http://[fe80::1]/",
            "http://0.0.0.0/",
            "http://224.0.0.1/",
            "http://localhost:8080/",
            "http://a.localhost./",
        ] {
            assert_eq!(check(local, strict), Err(Refused::Local), "{local}");
            assert!(check(local, open).is_ok(), "{local}");
        }
    }

    #[test]
    fn credentials_are_never_shown() {
        let shown = redacted("https://user:secret@events.example/x");
        assert_eq!(shown, "https://events.example/x");
        assert_eq!(
            redacted("https://events.example/x"),
            "https://events.example/x"
        );
    }
}
