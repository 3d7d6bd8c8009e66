//! channels_redis's message format, both ways, and what a panel socket is sent.
//!
//! The core layer stores each message as 12 random bytes (uniqueness inside a sorted set)
//! followed by a msgpack map, optionally Fernet-encrypted; the pub/sub layer publishes the
//! msgpack map (or its Fernet token) with no prefix. The map's `__asgi_channel__` names the
//! member channels the copy is for. Layer versions 3.4.1 and 4.x agree on all of this.
//!
//! A Django message becomes one WebSocket text message by these rules, in order:
//! `{"type": "websocket.send", "text": T}` sends `T` as it is; a message with a `payload`
//! sends `{"type": "data", "payload": …}` (the panel protocol of SAPL's WebSocket branch,
//! whatever the handler name in `type`); anything else is sent as JSON without
//! `__asgi_channel__`. Map key order is kept, so the JSON reads as Django wrote it.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use aes::cipher::{block_padding::Pkcs7, BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use hmac::{KeyInit, Mac};
use rmpv::Value;
use sha2::{Digest, Sha256};

/// The key holding the member channels a stored copy is meant for.
pub const CHANNEL_FIELD: &str = "__asgi_channel__";

/// Bytes of random prefix in front of every core-layer message.
pub const CORE_PREFIX_LEN: usize = 12;

/// Why a message from Redis could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("message shorter than its random prefix")]
    Short,
    #[error("not msgpack: {0}")]
    Msgpack(String),
    #[error("the message is not a msgpack map")]
    NotAMap,
    #[error("no configured key decrypts the message, or it is older than its expiry")]
    Fernet,
}

/// A decoded channel-layer message.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerMessage {
    /// The member channels named in `__asgi_channel__` (empty for pub/sub messages).
    pub channels: Vec<String>,
    /// The message's other fields, in Django's order.
    pub fields: Vec<(Value, Value)>,
}

/// Fernet keys derived the way channels_redis derives them from its configured strings.
#[derive(Clone, Default)]
pub struct Crypter {
    keys: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Crypter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Crypter({} keys)", self.keys.len())
    }
}

type HmacSha256 = hmac::Hmac<Sha256>;

impl Crypter {
    /// One Fernet key per configured string: SHA-256 of the string (signing half, then
    /// encryption half). No strings means messages are not encrypted.
    pub fn new(configured: &[String]) -> Crypter {
        let keys = configured
            .iter()
            .map(|k| {
                let digest = Sha256::digest(k.as_bytes());
                let mut key = [0u8; 32];
                key.copy_from_slice(&digest);
                key
            })
            .collect();
        Crypter { keys }
    }

    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Opens a Fernet token with any of the keys (like `MultiFernet`), refusing tokens
    /// older than `ttl_secs`.
    pub fn decrypt(&self, token: &[u8], ttl_secs: u64) -> Result<Vec<u8>, WireError> {
        let raw = URL_SAFE.decode(token).map_err(|_| WireError::Fernet)?;
        // version (1) + timestamp (8) + iv (16) + at least one block (16) + hmac (32)
        if raw.len() < 73 || raw[0] != 0x80 || (raw.len() - 57) % 16 != 0 {
            return Err(WireError::Fernet);
        }
        let (signed, tag) = raw.split_at(raw.len() - 32);
        let mut stamp = [0u8; 8];
        stamp.copy_from_slice(&signed[1..9]);
        let issued = u64::from_be_bytes(stamp);
        if issued.saturating_add(ttl_secs) < now_secs() {
            return Err(WireError::Fernet);
        }
        for key in &self.keys {
            let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(&key[..16]) else {
                continue;
            };
            mac.update(signed);
            if mac.verify_slice(tag).is_err() {
                continue;
            }
            let Ok(decryptor) =
                cbc::Decryptor::<aes::Aes128>::new_from_slices(&key[16..], &signed[9..25])
            else {
                continue;
            };
            return decryptor
                .decrypt_padded_vec::<Pkcs7>(&signed[25..])
                .map_err(|_| WireError::Fernet);
        }
        Err(WireError::Fernet)
    }

    /// Seals `plain` with the first key, as `MultiFernet.encrypt` does.
    pub fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let key = self.keys.first()?;
        let iv: [u8; 16] = rand::random();
        let encryptor = cbc::Encryptor::<aes::Aes128>::new_from_slices(&key[16..], &iv).ok()?;
        let cipher = encryptor.encrypt_padded_vec::<Pkcs7>(plain);
        let mut token = Vec::with_capacity(57 + cipher.len());
        token.push(0x80);
        token.extend_from_slice(&now_secs().to_be_bytes());
        token.extend_from_slice(&iv);
        token.extend_from_slice(&cipher);
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&key[..16]).ok()?;
        mac.update(&token);
        token.extend_from_slice(&mac.finalize().into_bytes());
        Some(URL_SAFE.encode(token).into_bytes())
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Decodes a core-layer value (random prefix, optional Fernet, msgpack map).
pub fn decode_core(
    raw: &[u8],
    crypter: &Crypter,
    ttl_secs: u64,
) -> Result<LayerMessage, WireError> {
    let body = raw.get(CORE_PREFIX_LEN..).ok_or(WireError::Short)?;
    decode_body(body, crypter, ttl_secs)
}

/// Decodes a pub/sub-layer payload (optional Fernet, msgpack map).
pub fn decode_pubsub(
    raw: &[u8],
    crypter: &Crypter,
    ttl_secs: u64,
) -> Result<LayerMessage, WireError> {
    decode_body(raw, crypter, ttl_secs)
}

fn decode_body(body: &[u8], crypter: &Crypter, ttl_secs: u64) -> Result<LayerMessage, WireError> {
    let plain;
    let mut bytes = if crypter.enabled() {
        plain = crypter.decrypt(body, ttl_secs)?;
        &plain[..]
    } else {
        body
    };
    let value =
        rmpv::decode::read_value(&mut bytes).map_err(|e| WireError::Msgpack(e.to_string()))?;
    let Value::Map(entries) = value else {
        return Err(WireError::NotAMap);
    };
    let mut channels = Vec::new();
    let mut fields = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        if key.as_str() == Some(CHANNEL_FIELD) {
            match value {
                Value::String(s) => channels.extend(s.into_str()),
                Value::Array(items) => channels.extend(
                    items
                        .into_iter()
                        .filter_map(|v| v.as_str().map(str::to_string)),
                ),
                _ => {}
            }
        } else {
            fields.push((key, value));
        }
    }
    Ok(LayerMessage { channels, fields })
}

/// Encodes a message for one process key of the core layer, as `group_send` does.
pub fn encode_core(fields: &[(Value, Value)], channels: &[String], crypter: &Crypter) -> Vec<u8> {
    let mut map = fields.to_vec();
    map.push((
        Value::from(CHANNEL_FIELD),
        Value::Array(channels.iter().map(|c| Value::from(c.as_str())).collect()),
    ));
    let body = encode_map(map, crypter);
    let prefix: [u8; CORE_PREFIX_LEN] = rand::random();
    let mut out = Vec::with_capacity(CORE_PREFIX_LEN + body.len());
    out.extend_from_slice(&prefix);
    out.extend_from_slice(&body);
    out
}

/// Encodes a message for the pub/sub layer.
pub fn encode_pubsub(fields: &[(Value, Value)], crypter: &Crypter) -> Vec<u8> {
    encode_map(fields.to_vec(), crypter)
}

fn encode_map(map: Vec<(Value, Value)>, crypter: &Crypter) -> Vec<u8> {
    let mut packed = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut packed, &Value::Map(map));
    match crypter.encrypt(&packed) {
        Some(token) => token,
        None => packed,
    }
}

impl LayerMessage {
    fn field(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(k, _)| k.as_str() == Some(name))
            .map(|(_, v)| v)
    }

    /// The text a panel socket is sent for this message (rules in the module docs).
    pub fn client_text(&self) -> String {
        if self.field("type").and_then(Value::as_str) == Some("websocket.send") {
            if let Some(text) = self.field("text").and_then(Value::as_str) {
                return text.to_string();
            }
        }
        let mut out = String::new();
        if let Some(payload) = self.field("payload") {
            out.push_str("{\"type\": \"data\", \"payload\": ");
            write_json(payload, &mut out);
            out.push('}');
        } else {
            write_json(&Value::Map(self.fields.clone()), &mut out);
        }
        out
    }
}

/// A panel message `{"type": "data", "payload": …}` around a JSON document from Django.
pub fn data_message(payload_json: &str) -> String {
    format!(
        "{{\"type\": \"data\", \"payload\": {}}}",
        payload_json.trim()
    )
}

/// Writes a msgpack value as JSON, keeping map order. Binary strings become base64 text and
/// non-string keys their JSON text, since JSON has neither.
pub fn write_json(value: &Value, out: &mut String) {
    match value {
        Value::Nil => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        Value::F32(f) => write_float(f64::from(*f), out),
        Value::F64(f) => write_float(*f, out),
        Value::String(s) => match s.as_str() {
            Some(text) => write_string(text, out),
            None => write_string(&String::from_utf8_lossy(s.as_bytes()), out),
        },
        Value::Binary(bytes) => write_string(&STANDARD.encode(bytes), out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                match k.as_str() {
                    Some(key) => write_string(key, out),
                    None => {
                        let mut key = String::new();
                        write_json(k, &mut key);
                        write_string(&key, out);
                    }
                }
                out.push_str(": ");
                write_json(v, out);
            }
            out.push('}');
        }
        Value::Ext(_, bytes) => write_string(&STANDARD.encode(bytes), out),
    }
}

fn write_float(f: f64, out: &mut String) {
    if f.is_finite() {
        // serde_json prints the shortest text that reads back as the same float.
        out.push_str(&serde_json::Number::from_f64(f).map_or("null".into(), |n| n.to_string()));
    } else {
        out.push_str("null");
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push_str(&serde_json::Value::from(s).to_string());
}

/// Converts a JSON document into msgpack fields (for messages the edge publishes itself).
pub fn json_to_value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(json_to_value).collect()),
        serde_json::Value::Object(map) => Value::Map(
            map.iter()
                .map(|(k, v)| (Value::from(k.as_str()), json_to_value(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voto() -> Vec<(Value, Value)> {
        vec![
            (Value::from("type"), Value::from("painel.data")),
            (
                Value::from("payload"),
                Value::Map(vec![
                    (Value::from("msg_painel"), Value::from("Votação aberta!")),
                    (Value::from("num_presentes"), Value::from(8)),
                    (Value::from("brasao"), Value::Nil),
                ]),
            ),
        ]
    }

    #[test]
    fn core_message_round_trips_and_names_its_channels() {
        let channels = vec!["specific.abc!1".to_string(), "specific.abc!2".to_string()];
        let raw = encode_core(&voto(), &channels, &Crypter::default());
        let msg = decode_core(&raw, &Crypter::default(), 10).unwrap();
        assert_eq!(msg.channels, channels);
        assert_eq!(
            msg.client_text(),
            r#"{"type": "data", "payload": {"msg_painel": "Votação aberta!", "num_presentes": 8, "brasao": null}}"#
        );
    }

    #[test]
    fn encrypted_messages_open_with_any_configured_key() {
        let writer = Crypter::new(&["chave-nova".to_string()]);
        let reader = Crypter::new(&["chave-antiga".to_string(), "chave-nova".to_string()]);
        let raw = encode_core(&voto(), &["specific.x!y".into()], &writer);
        let msg = decode_core(&raw, &reader, 10).unwrap();
        assert_eq!(msg.channels, vec!["specific.x!y".to_string()]);
        let stranger = Crypter::new(&["outra".to_string()]);
        assert!(matches!(
            decode_core(&raw, &stranger, 10),
            Err(WireError::Fernet)
        ));
    }

    #[test]
    fn websocket_send_text_goes_out_verbatim() {
        let fields = vec![
            (Value::from("type"), Value::from("websocket.send")),
            (Value::from("text"), Value::from("{\"type\":\"data\"}")),
        ];
        let raw = encode_pubsub(&fields, &Crypter::default());
        let msg = decode_pubsub(&raw, &Crypter::default(), 10).unwrap();
        assert_eq!(msg.client_text(), "{\"type\":\"data\"}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_core(b"short", &Crypter::default(), 10).is_err());
        assert!(decode_core(&[0u8; 20], &Crypter::default(), 10).is_err());
        let crypter = Crypter::new(&["k".to_string()]);
        assert!(decode_core(&[b'A'; 120], &crypter, 10).is_err());
    }
}
