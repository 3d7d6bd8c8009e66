//! Who may watch a sessão's panel, decided without Gunicorn: the `sessionid` cookie names a
//! `django_session` row in SAPL's PostgreSQL, whose data names the user; the user passes
//! the configured permission rule (by default: any `painel` or `sessao` permission, or
//! `parlamentares.can_vote`; superusers always; inactive users never).
//!
//! Session data comes in two encodings: Django 2.2's `base64("<hmac>:<json>")` and the
//! signing format of Django ≥ 3.1, `<base64 json>:<timestamp>:<signature>` (a leading `.`
//! marks zlib). The row itself is trusted (the cookie only names it), so its signature is
//! not re-checked; what is checked, when `SECRET_KEY` is configured, is Django's own
//! `_auth_user_hash`, which stops matching when the user's password changes.
//!
//! The outcome maps onto the close codes of SAPL's consumer: 4401, 4403, 4404.

use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};
use tracing::{debug, warn};

/// The salt Django's `AbstractBaseUser.get_session_auth_hash` uses.
const AUTH_HASH_SALT: &str = "django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash";

/// Why a socket is refused, with the close code SAPL's consumer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("not authenticated")]
    NotAuthenticated,
    #[error("not authorized")]
    Forbidden,
    #[error("no such sessão")]
    NoSessao,
}

impl Denial {
    pub fn close_code(self) -> u16 {
        match self {
            Denial::NotAuthenticated => 4401,
            Denial::Forbidden => 4403,
            Denial::NoSessao => 4404,
        }
    }

    /// The value of the `outcome` label of the auth metric.
    pub fn label(self) -> &'static str {
        match self {
            Denial::NotAuthenticated => "unauthenticated",
            Denial::Forbidden => "forbidden",
            Denial::NoSessao => "no_sessao",
        }
    }
}

/// The database could not answer; the socket is closed with a retryable code.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no database configured (DATABASE_URL)")]
    NoDatabase,
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// What a session row says about its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    pub user_id: i32,
    pub auth_hash: Option<String>,
}

/// The permission rule and the database it reads.
pub struct Authenticator {
    database_url: Option<String>,
    secret_key: Option<String>,
    modules: Vec<String>,
    permissions: Vec<String>,
    client: Mutex<Option<Arc<Client>>>,
}

impl Authenticator {
    pub fn new(
        database_url: Option<String>,
        secret_key: Option<String>,
        modules: Vec<String>,
        permissions: Vec<String>,
    ) -> Authenticator {
        Authenticator {
            database_url,
            secret_key,
            modules,
            permissions,
            client: Mutex::new(None),
        }
    }

    /// One shared connection (tokio-postgres pipelines concurrent queries on it), opened on
    /// first use and again after it breaks.
    async fn client(&self) -> Result<Arc<Client>, AuthError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            if !client.is_closed() {
                return Ok(client.clone());
            }
        }
        let url = self.database_url.as_deref().ok_or(AuthError::NoDatabase)?;
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                warn!(error = %e, "painel: PostgreSQL connection closed");
            }
        });
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Decides whether the holder of `session_key` may watch sessão `sessao_id`.
    pub async fn check(
        &self,
        session_key: Option<&str>,
        sessao_id: u64,
    ) -> Result<Result<i32, Denial>, AuthError> {
        let Some(key) = session_key.filter(|k| !k.is_empty() && k.len() <= 40) else {
            return Ok(Err(Denial::NotAuthenticated));
        };
        let client = self.client().await?;

        let row = client
            .query_opt(
                "SELECT session_data FROM django_session \
                 WHERE session_key = $1 AND expire_date > now()",
                &[&key],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Err(Denial::NotAuthenticated));
        };
        let data: String = row.get(0);
        let Some(user) = decode_session(&data) else {
            debug!("painel: session without a logged-in user");
            return Ok(Err(Denial::NotAuthenticated));
        };

        let row = client
            .query_opt(
                "SELECT u.password, u.is_active AND (u.is_superuser OR EXISTS ( \
                   SELECT 1 FROM auth_permission p \
                     JOIN django_content_type ct ON ct.id = p.content_type_id \
                    WHERE (ct.app_label = ANY($2) OR ct.app_label || '.' || p.codename = ANY($3)) \
                      AND (p.id IN (SELECT up.permission_id FROM auth_user_user_permissions up \
                                     WHERE up.user_id = u.id) \
                           OR p.id IN (SELECT gp.permission_id FROM auth_user_groups ug \
                                         JOIN auth_group_permissions gp ON gp.group_id = ug.group_id \
                                        WHERE ug.user_id = u.id)))) \
                 FROM auth_user u WHERE u.id = $1",
                &[&user.user_id, &self.modules, &self.permissions],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Err(Denial::NotAuthenticated));
        };
        let password: String = row.get(0);
        let allowed: bool = row.get::<_, Option<bool>>(1).unwrap_or(false);

        if let Some(secret) = &self.secret_key {
            let matches = user
                .auth_hash
                .as_deref()
                .is_some_and(|h| auth_hash_matches(h, &password, secret));
            if !matches {
                debug!(
                    user_id = user.user_id,
                    "painel: session hash does not match the password"
                );
                return Ok(Err(Denial::NotAuthenticated));
            }
        }
        if !allowed {
            return Ok(Err(Denial::Forbidden));
        }

        if !self.sessao_exists(sessao_id).await? {
            return Ok(Err(Denial::NoSessao));
        }
        Ok(Ok(user.user_id))
    }

    /// Whether the sessão plenária exists.
    pub async fn sessao_exists(&self, sessao_id: u64) -> Result<bool, AuthError> {
        let Ok(id) = i32::try_from(sessao_id) else {
            return Ok(false);
        };
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT 1 FROM sessao_sessaoplenaria WHERE id = $1", &[&id])
            .await?;
        Ok(row.is_some())
    }
}

/// Reads the user out of a session's data, in either Django encoding.
pub fn decode_session(data: &str) -> Option<SessionUser> {
    let json = if data.contains(':') {
        decode_signed(data)?
    } else {
        // Django 2.2: base64("<hmac hex>:<json>").
        let raw = STANDARD.decode(data.trim()).ok()?;
        let colon = raw.iter().position(|b| *b == b':')?;
        raw[colon + 1..].to_vec()
    };
    let value: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let user_id = match value.get("_auth_user_id")? {
        serde_json::Value::String(s) => s.parse().ok()?,
        serde_json::Value::Number(n) => i32::try_from(n.as_i64()?).ok()?,
        _ => return None,
    };
    let auth_hash = value
        .get("_auth_user_hash")
        .and_then(|h| h.as_str())
        .map(str::to_string);
    Some(SessionUser { user_id, auth_hash })
}

/// Django ≥ 3.1's `signing.dumps` format: the JSON is the first of three `:` parts.
fn decode_signed(data: &str) -> Option<Vec<u8>> {
    let payload = data.split(':').next()?;
    let (compressed, payload) = match payload.strip_prefix('.') {
        Some(rest) => (true, rest),
        None => (false, payload),
    };
    let raw = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    if !compressed {
        return Some(raw);
    }
    let mut out = Vec::new();
    let mut decoder = flate2::read::ZlibDecoder::new(&raw[..]);
    // Session data is small; the cap keeps a crafted row from inflating without bound.
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut decoder, 1 << 20), &mut out).ok()?;
    Some(out)
}

/// Django's `salted_hmac(AUTH_HASH_SALT, password)`: SHA-1 in Django 2.2, SHA-256 from 3.1
/// (3.1 and 3.2 still accept the SHA-1 form), so either is accepted.
pub fn auth_hash_matches(stored: &str, password_hash: &str, secret_key: &str) -> bool {
    let sha1 = {
        let key = Sha1::digest(format!("{AUTH_HASH_SALT}{secret_key}").as_bytes());
        let Ok(mut mac) = <hmac::Hmac<Sha1> as KeyInit>::new_from_slice(&key) else {
            return false;
        };
        mac.update(password_hash.as_bytes());
        hex(&mac.finalize().into_bytes())
    };
    let sha256 = {
        let key = Sha256::digest(format!("{AUTH_HASH_SALT}{secret_key}").as_bytes());
        let Ok(mut mac) = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&key) else {
            return false;
        };
        mac.update(password_hash.as_bytes());
        hex(&mac.finalize().into_bytes())
    };
    constant_eq(stored.as_bytes(), sha1.as_bytes())
        || constant_eq(stored.as_bytes(), sha256.as_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of one cookie in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn django22_session_data_names_the_user() {
        let json = r#"{"_auth_user_id":"7","_auth_user_backend":"django.contrib.auth.backends.ModelBackend","_auth_user_hash":"abc"}"#;
        let data = STANDARD.encode(format!("0123456789abcdef:{json}"));
        assert_eq!(
            decode_session(&data),
            Some(SessionUser {
                user_id: 7,
                auth_hash: Some("abc".into())
            })
        );
    }

    #[test]
    fn signed_session_data_names_the_user_compressed_or_not() {
        let json = br#"{"_auth_user_id":"12","_auth_user_hash":"h"}"#;
        let plain = format!("{}:1tXyZa:signature", URL_SAFE_NO_PAD.encode(json));
        assert_eq!(decode_session(&plain).map(|u| u.user_id), Some(12));

        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut z, json).unwrap();
        let packed = format!(
            ".{}:1tXyZa:signature",
            URL_SAFE_NO_PAD.encode(z.finish().unwrap())
        );
        assert_eq!(decode_session(&packed).map(|u| u.user_id), Some(12));
    }

    #[test]
    fn anonymous_or_broken_sessions_name_nobody() {
        let data = STANDARD.encode("abc:{}");
        assert_eq!(decode_session(&data), None);
        assert_eq!(decode_session("%%%"), None);
    }

    #[test]
    fn cookie_values_are_found_among_others() {
        let header = "csrftoken=abc; sessionid=xyz123; theme=dark";
        assert_eq!(cookie(header, "sessionid"), Some("xyz123"));
        assert_eq!(cookie(header, "missing"), None);
    }

    #[test]
    fn close_codes_are_sapls() {
        assert_eq!(Denial::NotAuthenticated.close_code(), 4401);
        assert_eq!(Denial::Forbidden.close_code(), 4403);
        assert_eq!(Denial::NoSessao.close_code(), 4404);
    }
}
