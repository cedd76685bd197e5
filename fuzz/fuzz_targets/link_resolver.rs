//! `links.next`: whatever a server puts there, a link that is followed stays on the
//! space's scheme, host and port and carries no credentials of its own.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sipgw_bulk::client::{ClientConfig, ReadClient, RequestStats};
use sipgw_bulk::limiter::Limiter;
use sipgw_bulk::retry::RetryPolicy;
use sipgw_bulk::secret::{Credentials, Secret};

fn client() -> &'static ReadClient {
    static CLIENT: OnceLock<ReadClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let config = ClientConfig {
            base_url: url::Url::parse("https://acme.signalwire.com").unwrap(),
            credentials: Credentials {
                project_id: "p".into(),
                token: Secret::new("t"),
            },
            timeout: std::time::Duration::from_secs(1),
            connect_timeout: std::time::Duration::from_secs(1),
            retry: RetryPolicy::default(),
            pool_size: 1,
        };
        ReadClient::new(
            &config,
            Arc::new(Limiter::new(None, None)),
            Arc::new(RequestStats::default()),
            tokio_util::sync::CancellationToken::new(),
        )
        .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(next) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(url) = client().resolve_link(next) {
        assert_eq!(url.scheme(), "https");
        assert_eq!(url.host_str(), Some("acme.signalwire.com"));
        assert_eq!(url.port_or_known_default(), Some(443));
        assert!(url.username().is_empty() && url.password().is_none(), "{url}");
    }
    if let Err(message) = client().resolve_link(next) {
        assert!(!message.chars().any(char::is_control), "{message:?}");
    }
});
