//! `export`: page through every gateway by following `links.next` exactly as given, and hand
//! each one to a writer as its page arrives (memory stays at one page).

use std::collections::HashSet;

use crate::client::{ApiError, ReadClient};
use crate::model::GatewayResource;

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("listing gateways failed")]
    Api(#[from] ApiError),
    #[error("{0}")]
    ForeignLink(String),
    #[error("the server's `links.next` repeats {0}: stopped to avoid a loop")]
    RepeatingLink(String),
    #[error("cannot write the export")]
    Write(#[from] std::io::Error),
}

/// Counts from an export.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportStats {
    pub pages: u64,
    pub gateways: u64,
}

/// Lists every gateway, `page_size` a page, calling `each` for each one in list order.
pub async fn export(
    client: &ReadClient,
    page_size: u32,
    mut each: impl FnMut(&GatewayResource) -> std::io::Result<()>,
) -> Result<ExportStats, ExportError> {
    let mut stats = ExportStats::default();
    let mut seen = HashSet::new();
    let mut url = client.first_page_url(page_size);
    loop {
        if !seen.insert(url.to_string()) {
            return Err(ExportError::RepeatingLink(url.to_string()));
        }
        let page = client.list_page(url).await?.value;
        stats.pages += 1;
        for gateway in &page.data {
            each(gateway)?;
            stats.gateways += 1;
        }
        tracing::debug!(pages = stats.pages, gateways = stats.gateways, "page read");
        match page.links.next.as_deref().map(str::trim) {
            None | Some("") => return Ok(stats),
            Some(next) => {
                url = client
                    .resolve_link(next)
                    .map_err(ExportError::ForeignLink)?
            }
        }
    }
}
