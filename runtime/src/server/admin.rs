//! Who may call the endpoints that change the server (plugin reloads, model loads and unloads,
//! deployment reloads): with an admin token (`server.admin_token`, or `OPAL_ADMIN_TOKEN` in the
//! server's environment), requests bearing it in `Authorization: Bearer …`; without one,
//! loopback clients only.

use super::{routes::ApiError, state::AppState};
use axum::http::{header, HeaderMap, StatusCode};
use opal_runtime::config::AdminToken;
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

/// The environment variable holding the admin token, for the server and for `opal reload`.
const TOKEN_VARIABLE: &str = "OPAL_ADMIN_TOKEN";

/// The token in `OPAL_ADMIN_TOKEN`, if it holds one: the server's when the deployment sets
/// none, and the one `opal reload` sends.
pub(crate) fn environment_token() -> Option<AdminToken> {
    std::env::var(TOKEN_VARIABLE)
        .ok()
        .and_then(|value| AdminToken::new(&value))
}

/// The token the server requires: the deployment's, else the environment's.
pub(crate) fn server_token(configured: Option<&AdminToken>) -> Option<AdminToken> {
    configured.cloned().or_else(environment_token)
}

/// Admits or refuses a changing request from `peer` with `headers`: 401 when a token is
/// required and none was sent, 403 for a wrong token or, without a token configured, a client
/// that is not on this machine's loopback.
pub(crate) fn authorize(
    token: Option<&AdminToken>,
    peer: IpAddr,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some(token) = token else {
        if is_loopback(peer) {
            return Ok(());
        }
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "admin endpoints answer only clients on this machine; {peer} is not one. Set \
                 server.admin_token (or {TOKEN_VARIABLE}) to allow remote clients that send it"
            ),
        ));
    };
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match sent {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "admin endpoints require 'Authorization: Bearer <token>' with the server's \
                 admin token ({TOKEN_VARIABLE} for opal reload)"
            ),
        )),
        Some(sent) if equal_in_constant_time(sent.trim().as_bytes(), token.secret().as_bytes()) => {
            Ok(())
        }
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the admin token sent is not the server's".to_owned(),
        )),
    }
}

/// Makes `change` for an admin client (see [`authorize`]), on a blocking thread: `what` names
/// it if that thread fails.
pub(crate) async fn change<T: Send + 'static>(
    state: &Arc<AppState>,
    peer: SocketAddr,
    headers: &HeaderMap,
    what: String,
    change: impl FnOnce(&AppState) -> T + Send + 'static,
) -> Result<T, ApiError> {
    authorize(state.admin_token.as_ref(), peer.ip(), headers)?;
    let worker = state.clone();
    tokio::task::spawn_blocking(move || change(&worker))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{what} failed: {e}"),
            )
        })
}

/// Whether `peer` is this machine over loopback, IPv4-mapped IPv6 addresses included.
fn is_loopback(peer: IpAddr) -> bool {
    match peer {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// `a == b`, taking the same time for every `a` of `b`'s length, so the time of a refusal
/// does not tell how much of a guessed token was right.
fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn status(result: Result<(), ApiError>) -> Option<StatusCode> {
        result.err().map(|e| e.status())
    }

    #[test]
    fn without_a_token_only_loopback_clients_are_admitted() {
        for peer in ["127.0.0.1", "127.3.4.5", "::1", "::ffff:127.0.0.1"] {
            let peer = peer.parse().unwrap();
            assert_eq!(
                status(authorize(None, peer, &headers(None))),
                None,
                "{peer}"
            );
        }
        for peer in ["192.0.2.7", "10.0.0.1", "::ffff:10.0.0.1", "2001:db8::1"] {
            let peer = peer.parse().unwrap();
            assert_eq!(
                status(authorize(None, peer, &headers(None))),
                Some(StatusCode::FORBIDDEN),
                "{peer}"
            );
        }
    }

    #[test]
    fn with_a_token_every_client_must_send_it() {
        let token = AdminToken::new("s3cret").unwrap();
        for peer in ["127.0.0.1", "192.0.2.7"] {
            let peer: IpAddr = peer.parse().unwrap();
            let check =
                |authorization| status(authorize(Some(&token), peer, &headers(authorization)));
            assert_eq!(check(Some("Bearer s3cret")), None);
            assert_eq!(check(None), Some(StatusCode::UNAUTHORIZED));
            assert_eq!(check(Some("Basic s3cret")), Some(StatusCode::UNAUTHORIZED));
            assert_eq!(check(Some("Bearer s3cre")), Some(StatusCode::FORBIDDEN));
            assert_eq!(check(Some("Bearer s3cret2")), Some(StatusCode::FORBIDDEN));
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(equal_in_constant_time(b"abc", b"abc"));
        assert!(!equal_in_constant_time(b"abc", b"abd"));
        assert!(!equal_in_constant_time(b"ab", b"abc"));
        assert!(!equal_in_constant_time(b"", b"a"));
    }
}
