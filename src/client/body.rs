//! Bodies read against a cap and believed only after a check: a hostile or broken server
//! must not fill memory, plans or reports, nor answer for another gateway.

use uuid::Uuid;

use super::Reply;
use super::error::{ApiError, transport_error};
use crate::failure::ErrorKind;
use crate::model::{GatewayResource, MAX_LIST_FIELD, MAX_TEXT_FIELD, Wire};

/// Raw bytes of a successful reply, decoded by the caller that knows the type.
pub(super) mod bytes_body {
    pub struct Body(pub bytes::Bytes);
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(
    reply: Reply<bytes_body::Body>,
) -> Result<Reply<T>, ApiError> {
    match serde_json::from_slice(&reply.value.0) {
        Ok(value) => Ok(Reply {
            value,
            status: reply.status,
            attempts: reply.attempts,
            round_trip: reply.round_trip,
        }),
        Err(e) => Err(ApiError::new(
            ErrorKind::Unreadable,
            format!(
                "the server's answer is not what was asked for: {}",
                crate::inert::text(&e.to_string(), 200)
            ),
        )
        .after(reply.attempts, reply.status)),
    }
}

/// Reads a body chunk by chunk against `cap`: a server cannot make us hold more.
pub(super) async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
    attempt: u32,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = |what: String| ApiError {
        attempts: attempt,
        ..ApiError::new(
            ErrorKind::TooLarge,
            format!("the server's answer is {what}, more than the {cap} bytes read at most"),
        )
    };
    match response.content_length() {
        Some(len) if len > cap as u64 => return Err(too_large(format!("{len} bytes"))),
        // A declared length frames the body (hyper stops there): read it whole, no copy.
        Some(_) => {
            return response
                .bytes()
                .await
                .map_err(|e| transport_error(&e, attempt));
        }
        None => {}
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(&e, attempt))?
    {
        if body.len() + chunk.len() > cap {
            return Err(too_large("longer".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A gateway answer is believed only when it is the one asked for and its fields are of a
/// sane size (a hostile server must not fill plans, reports and memory).
pub(super) fn check_gateway(
    gateway: &GatewayResource,
    asked: Option<&Uuid>,
) -> Result<(), ApiError> {
    let bad = |kind: ErrorKind, message: String| Err(ApiError::new(kind, message));
    if let Some(asked) = asked
        && Uuid::try_parse(&gateway.id).ok().as_ref() != Some(asked)
    {
        return bad(
            ErrorKind::OtherGateway,
            format!(
                "the server answered for gateway {} instead of {}: not believed, nothing \
                 written",
                crate::inert::text(&gateway.id, 64),
                asked.hyphenated()
            ),
        );
    }
    let wires = gateway.sip_gateway.wires();
    // Texts first, then lists, then choices: the first oversized one is named.
    for (field, value) in &wires {
        if let Wire::Text(value) = value
            && value.len() > MAX_TEXT_FIELD
        {
            return bad(
                ErrorKind::OversizedField,
                format!(
                    "the server's `{field}` is {} bytes (at most {MAX_TEXT_FIELD} are believed)",
                    value.len()
                ),
            );
        }
    }
    for (field, value) in &wires {
        if let Wire::List(items) = value
            && (items.len() > MAX_LIST_FIELD || items.iter().any(|i| i.len() > MAX_LIST_FIELD))
        {
            return bad(
                ErrorKind::OversizedField,
                format!(
                    "the server's `{field}` has {} entries or one longer than {MAX_LIST_FIELD} \
                     bytes: not believed",
                    items.len()
                ),
            );
        }
    }
    for (field, value) in &wires {
        if let Wire::Choice(Some(value)) = value
            && value.len() > MAX_LIST_FIELD
        {
            return bad(
                ErrorKind::OversizedField,
                format!(
                    "the server's `{field}` is {} bytes: not believed",
                    value.len()
                ),
            );
        }
    }
    Ok(())
}
