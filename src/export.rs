//! `export`: page through every gateway by following `links.next` exactly as given, and hand
//! each one to a writer as its page arrives (memory stays at one page).
//!
//! Paging is bounded: a server that hands out `next` links forever is stopped by a cap on
//! pages, on gateways and on total time, each with a default far above the largest real
//! space; a link to another host, or one carrying credentials, is refused before it is
//! followed (see [`ReadClient::resolve_link`]).

use std::collections::HashSet;
use std::time::Duration;

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
    #[error(
        "stopped paging after {pages} pages, {gateways} gateways and {secs}s: past the cap of \
         {what} (max_pages / max_list_gateways / max_list_secs in the config)"
    )]
    TooLong {
        what: String,
        pages: u64,
        gateways: u64,
        secs: u64,
    },
    #[error("cannot write the export")]
    Write(#[from] std::io::Error),
}

/// Counts from an export.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportStats {
    pub pages: u64,
    pub gateways: u64,
}

/// How far paging may go before it is stopped as endless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagingLimits {
    pub max_pages: u64,
    pub max_gateways: u64,
    pub max_time: Duration,
}

impl Default for PagingLimits {
    /// 10^7 gateways in 10^5 pages within two hours: ten times the largest space we plan
    /// for (10^6 gateways, 1,000 a page, at a few pages a second).
    fn default() -> Self {
        PagingLimits {
            max_pages: 100_000,
            max_gateways: 10_000_000,
            max_time: Duration::from_secs(2 * 3600),
        }
    }
}

/// Lists every gateway, `page_size` a page, calling `each` for each one in list order.
pub async fn export(
    client: &ReadClient,
    page_size: u32,
    limits: PagingLimits,
    each: impl FnMut(&GatewayResource) -> std::io::Result<()>,
) -> Result<ExportStats, ExportError> {
    let mut stats = ExportStats::default();
    pages(client, page_size, limits, &mut stats, each).await?;
    Ok(stats)
}

/// [`export`], counting into `stats` as it goes: what was read is known when paging fails.
pub async fn pages(
    client: &ReadClient,
    page_size: u32,
    limits: PagingLimits,
    stats: &mut ExportStats,
    mut each: impl FnMut(&GatewayResource) -> std::io::Result<()>,
) -> Result<(), ExportError> {
    let started = tokio::time::Instant::now();
    let mut seen = HashSet::new();
    let mut url = client.first_page_url(page_size);
    loop {
        let past = if stats.pages >= limits.max_pages {
            Some(format!("{} pages", limits.max_pages))
        } else if stats.gateways >= limits.max_gateways {
            Some(format!("{} gateways", limits.max_gateways))
        } else if started.elapsed() >= limits.max_time {
            Some(format!("{}s", limits.max_time.as_secs()))
        } else {
            None
        };
        if let Some(what) = past {
            return Err(ExportError::TooLong {
                what,
                pages: stats.pages,
                gateways: stats.gateways,
                secs: started.elapsed().as_secs(),
            });
        }
        if !seen.insert(url.to_string()) {
            return Err(ExportError::RepeatingLink(crate::inert::text(
                url.as_str(),
                200,
            )));
        }
        let page = client.list_page(url).await?.value;
        stats.pages += 1;
        for gateway in &page.data {
            each(gateway)?;
            stats.gateways += 1;
        }
        tracing::debug!(pages = stats.pages, gateways = stats.gateways, "page read");
        match page.links.next.as_deref().map(str::trim) {
            None | Some("") => return Ok(()),
            Some(next) => {
                url = client
                    .resolve_link(next)
                    .map_err(ExportError::ForeignLink)?
            }
        }
    }
}
