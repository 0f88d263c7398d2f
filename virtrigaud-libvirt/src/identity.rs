//! The endpoint identity of a connection ([`virtrigaud_core::Provider::instance_id`]) and
//! libvirt URIs without credentials for logs, errors and `Debug` output.

/// Query parameters that say *which* endpoint a URI names (another daemon socket, another
/// embedded root, the URI the remote daemon opens). Every other parameter is dropped: libvirt's
/// `keyfile`, `pkipath`, `known_hosts`, `command`, `netcat`, `no_verify`, … and anything that
/// may carry a secret (`password`, `token`, …).
const IDENTITY_PARAMS: [&str; 3] = ["name", "socket", "root"];

/// A libvirt URI without credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CleanUri {
    /// The URI without `user@` / `user:password@`, without a fragment and with only the
    /// identity-bearing query parameters ([`IDENTITY_PARAMS`]).
    pub(crate) uri: String,
    /// Whether the URI names this machine's daemon (no host, or `localhost` / a loopback
    /// address), so that the same URI on two machines names two endpoints.
    pub(crate) local: bool,
}

/// Strips credentials from a libvirt URI (`driver[+transport]://[user[:pw]@][host][:port]/path?query`).
///
/// Everything between `://` and the *last* `@` before the query is user information, so a
/// password holding an unescaped `/` does not survive either.
pub(crate) fn clean_uri(raw: &str) -> CleanUri {
    let no_fragment = raw.split_once('#').map_or(raw, |(u, _)| u);
    let (base, query) = match no_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (no_fragment, None),
    };
    let (uri, local) = match base.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let authority = authority.to_ascii_lowercase();
            let local = is_local_host(host_of(&authority));
            (format!("{scheme}://{authority}{path}"), local)
        }
        // Not a hierarchical URI (an alias, `test:default`): nothing to strip but user info.
        None => (
            base.rsplit_once('@')
                .map_or(base, |(_, after)| after)
                .to_owned(),
            true,
        ),
    };
    let kept: Vec<String> = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !IDENTITY_PARAMS.contains(&key) {
                return None;
            }
            let value = if key == "name" {
                // The URI the remote daemon opens: cleaned the same way.
                clean_uri(value).uri
            } else {
                value.to_owned()
            };
            Some(format!("{key}={value}"))
        })
        .collect();
    let uri = if kept.is_empty() {
        uri
    } else {
        format!("{uri}?{}", kept.join("&"))
    };
    CleanUri { uri, local }
}

/// The host part of `host[:port]` / `[v6]:port`.
fn host_of(authority: &str) -> &str {
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split_once(']').map_or(v6, |(h, _)| h);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _port)| host)
}

fn is_local_host(host: &str) -> bool {
    host.is_empty()
        || host == "localhost"
        || host.ends_with(".localhost")
        || host == "::1"
        || host.starts_with("127.")
}

/// The endpoint identity: the clean URI, and for a URI naming this machine's daemon
/// (`qemu:///system`, `qemu+ssh://localhost/system`) `@` and the host name libvirt reports
/// (`virConnectGetHostname`), so the same URI on two machines gives two identities.
pub(crate) fn instance_id(uri: &str, hostname: impl FnOnce() -> Option<String>) -> String {
    let clean = clean_uri(uri);
    if !clean.local {
        return clean.uri;
    }
    match hostname() {
        Some(h) if !h.is_empty() => format!("{}@{h}", clean.uri),
        _ => {
            tracing::warn!(
                uri = %clean.uri,
                "libvirt reports no host name: the endpoint identity is the bare local URI"
            );
            clean.uri
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &'static str) -> impl FnOnce() -> Option<String> {
        move || Some(h.to_owned())
    }

    #[test]
    fn local_generic_uris_get_the_host_name() {
        assert_eq!(
            instance_id("qemu:///system", host("host1")),
            "qemu:///system@host1"
        );
        assert_ne!(
            instance_id("qemu:///system", host("host1")),
            instance_id("qemu:///system", host("host2")),
            "qemu:///system on two machines must differ"
        );
        assert_eq!(
            instance_id("qemu+ssh://root@localhost/system", host("h")),
            "qemu+ssh://localhost/system@h"
        );
        assert_eq!(
            instance_id("qemu+tcp://127.0.0.1:16509/system", host("h")),
            "qemu+tcp://127.0.0.1:16509/system@h"
        );
        assert_eq!(
            instance_id("qemu+tcp://[::1]/system", host("h")),
            "qemu+tcp://[::1]/system@h"
        );
        assert_eq!(
            instance_id("test:///tmp/x/node.xml", host("h")),
            "test:///tmp/x/node.xml@h"
        );
    }

    #[test]
    fn remote_uris_keep_their_host_and_never_ask_for_a_host_name() {
        let id = instance_id("qemu+ssh://admin@kvm-7.example.com/system", || {
            panic!("remote URIs need no host name")
        });
        assert_eq!(id, "qemu+ssh://kvm-7.example.com/system");
        assert_eq!(
            instance_id("qemu+tls://KVM-7.example.com:16514/system", || None),
            "qemu+tls://kvm-7.example.com:16514/system"
        );
    }

    #[test]
    fn credentials_and_secret_query_parameters_are_stripped() {
        let cases = [
            (
                "qemu+ssh://alice:hunter2@kvm1/system?keyfile=/home/alice/.ssh/id_ed25519",
                "qemu+ssh://kvm1/system",
            ),
            (
                "qemu+ssh://alice@kvm1:2222/system?no_verify=1&password=hunter2&socket=/run/l.sock",
                "qemu+ssh://kvm1:2222/system?socket=/run/l.sock",
            ),
            (
                "qemu+libssh2://alice:hun/ter@2@kvm1/system?known_hosts=/k&sshauth=password",
                "qemu+libssh2://kvm1/system",
            ),
            (
                "qemu+tls://kvm1/system?pkipath=/etc/pki/alice&token=hunter2#frag",
                "qemu+tls://kvm1/system",
            ),
            (
                "qemu+ssh://kvm1/?name=qemu+ssh://bob:hunter2@inner/system&command=/x",
                "qemu+ssh://kvm1/?name=qemu+ssh://inner/system",
            ),
            ("qemu:///embed?root=/srv/vr", "qemu:///embed?root=/srv/vr"),
        ];
        for (raw, want) in cases {
            let got = clean_uri(raw).uri;
            assert_eq!(got, want, "{raw}");
            for secret in [
                "alice",
                "bob",
                "hunter2",
                "ter@2",
                "id_ed25519",
                "pki",
                "known",
            ] {
                assert!(!got.contains(secret), "{secret} leaked from {raw}: {got}");
            }
            let id = instance_id(raw, host("h"));
            assert!(!id.contains("hunter2") && !id.contains("alice"), "{id}");
        }
    }
}
