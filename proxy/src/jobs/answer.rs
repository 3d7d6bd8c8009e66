//! Writing the edge's own answers for PDF routes: JSON for the API, small pt-BR HTML pages,
//! and the PDF itself for legacy links (`Content-Disposition: inline`, as SAPL sends it,
//! with `ETag`/`Last-Modified` and 304).

use std::path::Path;

use bytes::Bytes;
use http::{Method, StatusCode};
use pingora::http::ResponseHeader;
use pingora::modules::http::compression::ResponseCompression;
use pingora::proxy::Session;
use pingora::Result;

use crate::files::Validators;
use crate::proxy::RequestCtx;

/// Writes a complete answer with `body` and the given headers.
pub async fn write(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    content_type: &str,
    body: Bytes,
    headers: &[(&'static str, String)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4 + headers.len()))?;
    resp.insert_header("Content-Type", content_type)?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    resp.insert_header("X-Request-ID", ctx.request_id())?;
    for (name, value) in headers {
        resp.insert_header(*name, value.as_str())?;
    }
    no_compression(session);
    ctx.set_local_status(status);
    let head_only = session.req_header().method == Method::HEAD || body.is_empty();
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// A JSON answer.
pub async fn json(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    body: serde_json::Value,
    headers: &[(&'static str, String)],
) -> Result<()> {
    let mut headers = headers.to_vec();
    headers.push(("Cache-Control", "no-store".into()));
    let body = Bytes::from(body.to_string());
    write(session, ctx, status, "application/json", body, &headers).await
}

/// An HTML page.
pub async fn html(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    page: String,
    headers: &[(&'static str, String)],
) -> Result<()> {
    let mut headers = headers.to_vec();
    headers.push(("Cache-Control", "no-store".into()));
    let body = Bytes::from(page);
    write(
        session,
        ctx,
        status,
        "text/html; charset=utf-8",
        body,
        &headers,
    )
    .await
}

/// Sends a finished PDF inline, or 304 when the client's copy is current. Returns `false`
/// when the file is gone (expired and swept), so the caller can render it again.
pub async fn pdf(
    session: &mut Session,
    ctx: &mut RequestCtx,
    path: &Path,
    filename: &str,
) -> Result<bool> {
    let Ok(data) = tokio::fs::read(path).await else {
        return Ok(false);
    };
    let Ok(meta) = tokio::fs::metadata(path).await else {
        return Ok(false);
    };
    let validators = Validators::of(&meta);
    let header = |name: &str| {
        session
            .req_header()
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let headers = [
        ("ETag", validators.etag.clone()),
        (
            "Last-Modified",
            httpdate::fmt_http_date(validators.last_modified),
        ),
        // The data behind a report changes; the client must ask again, and gets 304 while
        // the PDF stands.
        ("Cache-Control", "no-cache".to_string()),
        (
            "Content-Disposition",
            format!("inline; filename=\"{filename}\""),
        ),
    ];
    if validators.not_modified(
        header("if-none-match").as_deref(),
        header("if-modified-since").as_deref(),
    ) {
        let mut resp = ResponseHeader::build(StatusCode::NOT_MODIFIED, Some(4))?;
        for (name, value) in &headers[..3] {
            resp.insert_header(*name, value.as_str())?;
        }
        resp.insert_header("X-Request-ID", ctx.request_id())?;
        ctx.set_local_status(304);
        session.write_response_header(Box::new(resp), true).await?;
        return Ok(true);
    }
    write(
        session,
        ctx,
        200,
        "application/pdf",
        Bytes::from(data),
        &headers,
    )
    .await?;
    Ok(true)
}

/// PDFs are already compressed and the answers are small: gzip stays off for them.
fn no_compression(session: &mut Session) {
    if let Some(module) = session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>()
    {
        module.adjust_level(0);
    }
}

/// The wait page: tells the reader the PDF is being made, follows the status URL, and
/// opens the PDF when it is ready. Without JavaScript it reloads the legacy link itself,
/// which answers the PDF once it exists.
pub fn wait_page(status_url: &str, pdf_url: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="pt-BR">
<head>
<meta charset="utf-8">
<title>Gerando o relatório</title>
<noscript><meta http-equiv="refresh" content="5"></noscript>
<style>body{{font-family:sans-serif;max-width:36em;margin:4em auto;padding:0 1em;color:#222}}</style>
</head>
<body>
<h1>Gerando o relatório…</h1>
<p id="situacao">O PDF está sendo preparado. Esta página o abrirá assim que ficar pronto.</p>
<p>Se nada acontecer, <a href="{pdf_url}">abra o PDF</a> em alguns instantes.</p>
<script>
(function () {{
  var status = "{status_url}", pdf = "{pdf_url}";
  var situacao = document.getElementById("situacao");
  function consulta() {{
    fetch(status, {{redirect: "manual", headers: {{"Accept": "application/json"}}}})
      .then(function (r) {{
        if (r.type === "opaqueredirect" || r.status === 302) {{ location.replace(pdf); return; }}
        return r.json().then(function (job) {{
          if (job.state === "done") {{ location.replace(pdf); }}
          else if (job.state === "failed") {{
            situacao.textContent = "Não foi possível gerar o relatório.";
          }} else {{ setTimeout(consulta, 1500); }}
        }});
      }})
      .catch(function () {{ setTimeout(consulta, 3000); }});
  }}
  setTimeout(consulta, 1000);
}})();
</script>
</body>
</html>
"#
    )
}

/// The page for too many pending reports: it reloads itself after `retry_after` seconds.
pub fn busy_page(retry_after: u64) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="pt-BR">
<head>
<meta charset="utf-8">
<title>Relatórios ocupados</title>
<meta http-equiv="refresh" content="{retry_after}">
</head>
<body style="font-family:sans-serif;max-width:36em;margin:4em auto">
<h1>Muitos relatórios em preparo</h1>
<p>O sistema está gerando muitos relatórios agora. Esta página tentará de novo em
{retry_after} segundos.</p>
</body>
</html>
"#
    )
}

/// A short page for a report that cannot be produced.
pub fn failure_page(not_found: bool) -> String {
    let (title, text) = if not_found {
        ("Relatório não encontrado", "O registro pedido não existe.")
    } else {
        (
            "Relatório indisponível",
            "Não foi possível gerar o relatório. Tente novamente mais tarde.",
        )
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"pt-BR\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;max-width:36em;margin:4em auto\"><h1>{title}</h1><p>{text}</p></body></html>\n"
    )
}
