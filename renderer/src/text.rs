//! pt-BR text rules shared by the reports: dates written out the way SAPL's
//! templates print them, ordinals, TinyMCE HTML flattened to paragraphs, ASCII
//! transliteration for barcodes and the character cut SAPL applies to ementas.
//!
//! Everything here is pure string work; fonts and glyph coverage belong to
//! `layout`, and the database to `reports`.

use chrono::{Datelike, NaiveDate};

/// Month names as SAPL prints them in long dates (Django's pt-BR locale, capitalised).
const MESES: [&str; 12] = [
    "Janeiro",
    "Fevereiro",
    "Março",
    "Abril",
    "Maio",
    "Junho",
    "Julho",
    "Agosto",
    "Setembro",
    "Outubro",
    "Novembro",
    "Dezembro",
];

/// Name of month `mes` (1 = Janeiro); an out-of-range month yields an empty string.
pub fn nome_mes(mes: u32) -> &'static str {
    usize::try_from(mes)
        .ok()
        .and_then(|m| m.checked_sub(1))
        .and_then(|i| MESES.get(i))
        .copied()
        .unwrap_or("")
}

/// Long pt-BR date: `2025-02-11` becomes "11 de Fevereiro de 2025" (day without a
/// leading zero, month capitalised, as SAPL's templates print `{{ date }}`).
pub fn data_por_extenso(data: NaiveDate) -> String {
    format!(
        "{} de {} de {}",
        data.day(),
        nome_mes(data.month()),
        data.year()
    )
}

/// Short pt-BR date `dd/mm/YYYY`.
pub fn data_curta(data: NaiveDate) -> String {
    data.format("%d/%m/%Y").to_string()
}

/// Feminine ordinal: 5 becomes "5ª" (sessão, legislatura, quinzena).
pub fn ordinal_feminino(n: i64) -> String {
    format!("{n}ª")
}

/// Masculine ordinal: 1 becomes "1º" (semestre).
pub fn ordinal_masculino(n: i64) -> String {
    format!("{n}º")
}

/// Cuts `texto` the way SAPL cuts the ementa on the matéria label: kept whole when
/// shorter than `limite` characters, otherwise its first `limite` characters
/// followed by "...". Counts characters, not bytes, so accents never split.
///
/// ```
/// assert_eq!(sapl_renderer::text::cortar("abcdef", 3), "abc...");
/// assert_eq!(sapl_renderer::text::cortar("ab", 3), "ab");
/// ```
pub fn cortar(texto: &str, limite: usize) -> String {
    if texto.chars().count() < limite {
        return texto.to_string();
    }
    let mut cortado: String = texto.chars().take(limite).collect();
    cortado.push_str("...");
    cortado
}

/// Cuts `texto` to at most `limite` characters with no marker (identifiers on the
/// protocol label).
pub fn truncar(texto: &str, limite: usize) -> String {
    texto.chars().take(limite).collect()
}

/// ASCII transliteration, as Python's `unidecode` does for the barcode text:
/// "PLÇ" becomes "PLC".
pub fn transliterar(texto: &str) -> String {
    deunicode::deunicode(texto)
}

/// Collapses runs of whitespace (including newlines and tabs) to one space and
/// trims the ends.
pub fn normalizar_espacos(texto: &str) -> String {
    texto.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Flattens TinyMCE HTML to paragraphs of plain text.
///
/// Block ends (`</p>`, `</div>`, `</li>`, headings, table rows) and `<br>` start a
/// new paragraph; every other tag is dropped; `<script>`/`<style>` bodies are
/// dropped with their tags; entities (`&aacute;`, `&#233;`, `&nbsp;`) are decoded.
/// Empty paragraphs are left out.
///
/// ```
/// let p = sapl_renderer::text::html_para_paragrafos("<p>Of&iacute;cio <b>12</b></p><p>x<br>y</p>");
/// assert_eq!(p, vec!["Ofício 12", "x", "y"]);
/// ```
pub fn html_para_paragrafos(html: &str) -> Vec<String> {
    let mut paragrafos = Vec::new();
    let mut atual = String::new();
    let mut resto = html;

    while let Some(inicio) = resto.find('<') {
        atual.push_str(&resto[..inicio]);
        let depois = &resto[inicio..];
        let abre_tag = depois[1..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '!');
        if !abre_tag {
            // "a < b" in free text is a less-than sign, not markup.
            atual.push('<');
            resto = &depois[1..];
            continue;
        }
        let Some(fim) = depois.find('>') else {
            // An unclosed `<` is text, not markup (SAPL's own reports choke on it).
            atual.push_str(depois);
            resto = "";
            break;
        };
        let tag = depois[1..fim].trim().to_ascii_lowercase();
        resto = &depois[fim + 1..];

        let nome: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if (nome == "script" || nome == "style") && !tag.starts_with('/') {
            // Skip the body up to the closing tag.
            let fechamento = format!("</{nome}");
            let minusculo = resto.to_ascii_lowercase();
            resto = match minusculo.find(&fechamento) {
                Some(pos) => {
                    let apos = &resto[pos..];
                    apos.find('>').map(|f| &apos[f + 1..]).unwrap_or("")
                }
                None => "",
            };
            continue;
        }
        let quebra = matches!(
            nome.as_str(),
            "br" | "p"
                | "div"
                | "li"
                | "tr"
                | "h1"
                | "h2"
                | "h3"
                | "h4"
                | "h5"
                | "h6"
                | "ul"
                | "ol"
                | "table"
                | "blockquote"
                | "hr"
        );
        if quebra {
            fechar_paragrafo(&mut atual, &mut paragrafos);
        } else if nome == "td" || nome == "th" {
            atual.push(' ');
        }
    }
    atual.push_str(resto);
    fechar_paragrafo(&mut atual, &mut paragrafos);
    paragrafos
}

/// Flattens TinyMCE HTML to one line of text (tags stripped, entities decoded),
/// for places where SAPL applies `striptags` and prints the result inline.
pub fn html_para_texto(html: &str) -> String {
    html_para_paragrafos(html).join(" ")
}

fn fechar_paragrafo(atual: &mut String, paragrafos: &mut Vec<String>) {
    let decodificado = html_escape::decode_html_entities(atual.as_str());
    let limpo = normalizar_espacos(&decodificado.replace('\u{a0}', " "));
    if !limpo.is_empty() {
        paragrafos.push(limpo);
    }
    atual.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(a: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(a, m, d).expect("valid test date")
    }

    #[test]
    fn datas_por_extenso_capitalizam_o_mes() {
        assert_eq!(
            data_por_extenso(data(2025, 2, 11)),
            "11 de Fevereiro de 2025"
        );
        assert_eq!(data_por_extenso(data(2024, 3, 5)), "5 de Março de 2024");
        assert_eq!(
            data_por_extenso(data(2024, 12, 31)),
            "31 de Dezembro de 2024"
        );
    }

    #[test]
    fn datas_curtas_tem_zeros() {
        assert_eq!(data_curta(data(2026, 3, 4)), "04/03/2026");
    }

    #[test]
    fn mes_fora_do_intervalo_fica_vazio() {
        assert_eq!(nome_mes(0), "");
        assert_eq!(nome_mes(13), "");
        assert_eq!(nome_mes(3), "Março");
    }

    #[test]
    fn ordinais() {
        assert_eq!(ordinal_feminino(5), "5ª");
        assert_eq!(ordinal_masculino(1), "1º");
    }

    #[test]
    fn cortar_segue_a_regra_do_sapl() {
        let ementa_239 = "a".repeat(239);
        assert_eq!(cortar(&ementa_239, 240), ementa_239);
        // Python keeps a string only when len < 240: exactly 240 is cut too.
        let ementa_240 = "é".repeat(240);
        assert_eq!(cortar(&ementa_240, 240), format!("{ementa_240}..."));
        let longa = "ç".repeat(5000);
        let cortada = cortar(&longa, 240);
        assert_eq!(cortada.chars().count(), 243);
        assert!(cortada.ends_with("ç..."));
    }

    #[test]
    fn transliteracao_para_codigo_de_barras() {
        assert_eq!(transliterar("1/2025-PLÇ"), "1/2025-PLC");
        assert_eq!(transliterar("Moção"), "Mocao");
    }

    #[test]
    fn html_vira_paragrafos() {
        let html = "<p>Leitura&nbsp;do <strong>Of&iacute;cio</strong> n&ordm; 12.</p>\
                    <p></p><p>Linha 1<br />Linha 2</p><ul><li>um</li><li>dois &amp; tr&ecirc;s</li></ul>";
        assert_eq!(
            html_para_paragrafos(html),
            vec![
                "Leitura do Ofício nº 12.",
                "Linha 1",
                "Linha 2",
                "um",
                "dois & três"
            ]
        );
    }

    #[test]
    fn html_sem_tags_e_menor_solto() {
        assert_eq!(html_para_paragrafos("a < b e c > d"), vec!["a < b e c > d"]);
        assert_eq!(html_para_paragrafos("x <b"), vec!["x <b"]);
        assert_eq!(html_para_paragrafos(""), Vec::<String>::new());
        assert_eq!(
            html_para_texto("<script>alert(1)</script><p>ok &#233;</p>"),
            "ok é"
        );
    }
}
