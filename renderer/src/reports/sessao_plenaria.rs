//! `sessao-plenaria`.
pub static IMPRESSAO_DIGITAL: std::sync::LazyLock<String> = std::sync::LazyLock::new(String::new);
pub async fn construir(
    _db: &tokio_postgres::Client,
    _n: i32,
    _r: crate::ReaderClass,
    _o: &crate::RenderOptions,
) -> Result<crate::layout::model::Document, crate::RenderError> {
    todo!()
}
