//! `etiqueta-protocolo`: the 62 × 29 mm protocolo label.
pub static IMPRESSAO_DIGITAL: std::sync::LazyLock<String> = std::sync::LazyLock::new(String::new);
pub fn ano_smallint(ano: i32) -> Option<i16> {
    i16::try_from(ano).ok()
}
pub async fn construir(
    _db: &tokio_postgres::Client,
    _n: i32,
    _a: i32,
    _o: &crate::RenderOptions,
) -> Result<crate::layout::model::Document, crate::RenderError> {
    todo!()
}
