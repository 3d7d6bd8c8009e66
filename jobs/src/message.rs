//! The job message on the wire: Celery's message protocol v2 as its Redis transport stores
//! it in a list, so a Django process can enqueue the same job with `send_task` and Celery's
//! tools can read the queue.
//!
//! Owns building a message for a [`JobSpec`] and parsing one back, whoever produced it.
//! Where the message goes (which list, which database) is [`crate::keys`]'s business.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The Celery task name the renderer answers to; Django calls
/// `send_task("sapl_edge.render_pdf", args=[kind, id, reader])`.
pub const DEFAULT_TASK_NAME: &str = "sapl_edge.render_pdf";

/// What one PDF job renders: the report kind, the object id and the reader class, exactly
/// the three positional arguments of the Celery task.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobSpec {
    /// Kebab-case report kind (`materia-tramitacao`, …); the renderer validates it.
    pub kind: String,
    /// `42`, or `numero/ano` for a protocolo.
    pub id: String,
    /// `anonymous` or `authenticated`.
    pub reader: String,
}

/// A message that cannot be a PDF job.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("message is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("message body is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("message field `{0}` is missing or has the wrong type")]
    Field(&'static str),
    #[error("unsupported content type `{0}` (only application/json)")]
    ContentType(String),
    #[error("job arguments are not [kind, id, reader]: {0}")]
    Arguments(String),
}

/// A message taken from the queue: who it is for and what it asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Celery's task id; the job's id everywhere (file name, result key, status URL).
    pub task_id: String,
    /// Celery's task name (`headers.task`).
    pub task_name: String,
    /// How many times the producer already retried it (`headers.retries`).
    pub retries: u32,
    pub spec: JobSpec,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    body: String,
    #[serde(rename = "content-type")]
    content_type: String,
    #[serde(rename = "content-encoding", default)]
    content_encoding: String,
    headers: Map<String, Value>,
    properties: Map<String, Value>,
}

/// A new random job id, in the UUID v4 text form Celery uses.
pub fn new_task_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Whether `text` has the shape of a job id (a UUID in hex with dashes), so that a status
/// URL can never name a key or file outside the job's own.
pub fn is_task_id(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Builds the JSON stored in the queue list for one job.
///
/// `queue` goes into `delivery_info.routing_key` as Celery's producer writes it;
/// `origin` names the producer (`sapl-edge@<host>`).
pub fn build(task_name: &str, task_id: &str, spec: &JobSpec, queue: &str, origin: &str) -> String {
    let args = json!([spec.kind, spec.id, spec.reader]);
    let body = json!([
        args,
        {},
        {"callbacks": null, "errbacks": null, "chain": null, "chord": null}
    ]);
    let headers = json!({
        "lang": "py",
        "task": task_name,
        "id": task_id,
        "shadow": null,
        "eta": null,
        "expires": null,
        "group": null,
        "group_index": null,
        "retries": 0,
        "timelimit": [null, null],
        "root_id": task_id,
        "parent_id": null,
        "argsrepr": format!("('{}', '{}', '{}')", spec.kind, spec.id, spec.reader),
        "kwargsrepr": "{}",
        "origin": origin,
        "ignore_result": false,
    });
    let properties = json!({
        "correlation_id": task_id,
        "reply_to": new_task_id(),
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": 0,
        "body_encoding": "base64",
        "delivery_tag": new_task_id(),
    });
    let envelope = json!({
        "body": BASE64.encode(body.to_string()),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": properties,
    });
    envelope.to_string()
}

/// Parses a queue entry written by [`build`] or by Celery's `send_task`.
///
/// The arguments may be positional (`[kind, id, reader]`, reader optional and anonymous by
/// default) or keyword (`{"kind": …, "id": …, "reader": …}`); an integer id is accepted.
pub fn parse(raw: &str) -> Result<Delivery, MessageError> {
    let envelope: Envelope = serde_json::from_str(raw)?;
    if envelope.content_type != "application/json" {
        return Err(MessageError::ContentType(envelope.content_type));
    }
    let headers = &envelope.headers;
    let task_id = headers
        .get("id")
        .and_then(Value::as_str)
        .ok_or(MessageError::Field("headers.id"))?
        .to_string();
    let task_name = headers
        .get("task")
        .and_then(Value::as_str)
        .ok_or(MessageError::Field("headers.task"))?
        .to_string();
    let retries = headers.get("retries").and_then(Value::as_u64).unwrap_or(0) as u32;

    let encoding = envelope
        .properties
        .get("body_encoding")
        .and_then(Value::as_str)
        .unwrap_or("base64");
    let body_bytes = match encoding {
        "base64" => BASE64.decode(envelope.body.as_bytes())?,
        _ => envelope.body.into_bytes(),
    };
    let body: Value = serde_json::from_slice(&body_bytes)?;
    let args = body.get(0).cloned().unwrap_or(Value::Null);
    let kwargs = body.get(1).cloned().unwrap_or(Value::Null);
    let spec = spec_from(&args, &kwargs)?;

    Ok(Delivery {
        task_id,
        task_name,
        retries,
        spec,
    })
}

fn spec_from(args: &Value, kwargs: &Value) -> Result<JobSpec, MessageError> {
    let positional = args.as_array().map(Vec::as_slice).unwrap_or_default();
    let get = |index: usize, name: &str| {
        positional
            .get(index)
            .or_else(|| kwargs.get(name))
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
    };
    let kind = get(0, "kind").ok_or_else(|| MessageError::Arguments(args.to_string()))?;
    let id = get(1, "id").ok_or_else(|| MessageError::Arguments(args.to_string()))?;
    let reader = get(2, "reader").unwrap_or_else(|| "anonymous".to_string());
    Ok(JobSpec { kind, id, reader })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            kind: "materia-tramitacao".into(),
            id: "42".into(),
            reader: "anonymous".into(),
        }
    }

    #[test]
    fn built_message_parses_back() {
        let id = new_task_id();
        let raw = build(
            DEFAULT_TASK_NAME,
            &id,
            &spec(),
            "cm:sapl-pdf",
            "sapl-edge@pod",
        );
        let d = parse(&raw).expect("parses");
        assert_eq!(d.task_id, id);
        assert_eq!(d.task_name, DEFAULT_TASK_NAME);
        assert_eq!(d.spec, spec());
    }

    #[test]
    fn body_is_base64_of_args_kwargs_embed() {
        let raw = build(DEFAULT_TASK_NAME, &new_task_id(), &spec(), "q", "o");
        let v: Value = serde_json::from_str(&raw).unwrap();
        let body = BASE64.decode(v["body"].as_str().unwrap()).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body[0], json!(["materia-tramitacao", "42", "anonymous"]));
        assert_eq!(body[2]["chord"], Value::Null);
        assert_eq!(v["properties"]["delivery_mode"], 2);
        assert_eq!(v["properties"]["body_encoding"], "base64");
    }

    #[test]
    fn celery_style_kwargs_and_integer_ids_are_accepted() {
        let body = BASE64.encode(r#"[[], {"kind": "etiqueta-materia", "id": 7}, {}]"#);
        let raw = format!(
            r#"{{"body":"{body}","content-type":"application/json","content-encoding":"utf-8",
               "headers":{{"id":"a","task":"t"}},"properties":{{"body_encoding":"base64"}}}}"#
        );
        let d = parse(&raw).unwrap();
        assert_eq!(d.spec.kind, "etiqueta-materia");
        assert_eq!(d.spec.id, "7");
        assert_eq!(d.spec.reader, "anonymous");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse("not json").is_err());
        assert!(parse(
            r#"{"body":"!!","content-type":"application/json","headers":{},"properties":{}}"#
        )
        .is_err());
    }

    #[test]
    fn task_ids_have_uuid_shape() {
        assert!(is_task_id(&new_task_id()));
        assert!(!is_task_id("../../etc/passwd"));
        assert!(!is_task_id("0123456789abcdef0123456789abcdef0123"));
    }
}
