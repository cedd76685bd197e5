//! The gateway list, a page at a time, and the links between pages (checked so the
//! credentials never follow a link to another host).

use url::Url;

use super::body::{check_gateway, decode};
use super::{ApiError, ReadClient, Reply};
use crate::latency::RequestKind;
use crate::model::GatewayResource;

impl ReadClient {
    /// The first page of the list, asking for `page_size` gateways a page.
    pub fn first_page_url(&self, page_size: u32) -> Url {
        let mut url = self.inner.collection.clone();
        url.set_query(Some(&format!("page_size={page_size}")));
        url
    }

    /// GET one page of the gateway list. Every gateway on it is checked like a GET answer.
    pub async fn list_page(&self, url: Url) -> Result<Reply<Page>, ApiError> {
        let reply = self.call(RequestKind::List, url, None).await?;
        let reply: Reply<Page> = decode(reply)?;
        for gateway in &reply.value.data {
            check_gateway(gateway, None).map_err(|e| e.after(reply.attempts, reply.status))?;
        }
        Ok(reply)
    }

    /// Resolves a `links.next` (absolute URL or path) against the space. A link to another
    /// scheme, host or port, or one carrying a user name or password, is refused: the
    /// credentials must never leave for another host or be replaced by the server's.
    pub fn resolve_link(&self, next: &str) -> Result<Url, String> {
        let base = &self.inner.collection;
        let shown = crate::inert::text(next, 200);
        let url = base
            .join(next)
            .map_err(|e| format!("`links.next` {shown} is not a URL: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "`links.next` {shown} carries a user name or password: refused, so the \
                 credentials are never replaced by the server's"
            ));
        }
        if url.scheme() != base.scheme()
            || url.host_str() != base.host_str()
            || url.port_or_known_default() != base.port_or_known_default()
        {
            return Err(format!(
                "`links.next` points to {}://{} but the space is {}://{}: refused, so the \
                 credentials do not leave for another host",
                url.scheme(),
                crate::inert::text(url.host_str().unwrap_or(""), 100),
                base.scheme(),
                base.host_str().unwrap_or("")
            ));
        }
        Ok(url)
    }
}

/// One page of `GET /api/fabric/resources/sip_gateways`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Page {
    pub data: Vec<GatewayResource>,
    #[serde(default)]
    pub links: Links,
}

/// A page's links; only `next` matters.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Links {
    #[serde(default)]
    pub next: Option<String>,
}
