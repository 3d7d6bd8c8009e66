//! The embedded DejaVu Sans faces: glyph coverage, advance widths for line
//! breaking, and the fallback glyph for characters the font lacks.
//!
//! The TTF files ship in `renderer/fonts/` and are compiled into the binary so a
//! render never depends on the host's fonts. Subsetting for the PDF happens in
//! `layout::pdf`; this module only measures.

use std::sync::OnceLock;

use ttf_parser::Face;

/// DejaVu Sans regular, as shipped in `renderer/fonts/`.
pub const DEJAVU_SANS: &[u8] = include_bytes!("../../fonts/DejaVuSans.ttf");
/// DejaVu Sans bold.
pub const DEJAVU_SANS_BOLD: &[u8] = include_bytes!("../../fonts/DejaVuSans-Bold.ttf");

/// Drawn in place of a character the font has no glyph for (emoji, rare
/// scripts): the replacement character, so the gap stays visible.
pub const SUBSTITUTO: char = '\u{FFFD}';

/// The two faces a document uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peso {
    Regular,
    Negrito,
}

/// A parsed face with its units per em.
pub struct Fonte {
    face: Face<'static>,
    unidades_por_em: f32,
}

/// Both faces, parsed once per process.
pub struct Fontes {
    regular: Fonte,
    negrito: Fonte,
}

/// Why the embedded fonts could not be used (only if the shipped files are broken).
#[derive(Debug, thiserror::Error)]
#[error("embedded font {0} cannot be parsed")]
pub struct FonteInvalida(&'static str);

impl Fontes {
    /// The process-wide parsed faces.
    pub fn globais() -> Result<&'static Fontes, FonteInvalida> {
        static FONTES: OnceLock<Result<Fontes, FonteInvalida>> = OnceLock::new();
        FONTES
            .get_or_init(|| {
                Ok(Fontes {
                    regular: Fonte::carregar(DEJAVU_SANS, "DejaVuSans.ttf")?,
                    negrito: Fonte::carregar(DEJAVU_SANS_BOLD, "DejaVuSans-Bold.ttf")?,
                })
            })
            .as_ref()
            .map_err(|e| FonteInvalida(e.0))
    }

    /// The face for a weight.
    pub fn fonte(&self, peso: Peso) -> &Fonte {
        match peso {
            Peso::Regular => &self.regular,
            Peso::Negrito => &self.negrito,
        }
    }
}

impl Fonte {
    fn carregar(bytes: &'static [u8], nome: &'static str) -> Result<Self, FonteInvalida> {
        let face = Face::parse(bytes, 0).map_err(|_| FonteInvalida(nome))?;
        let unidades_por_em = f32::from(face.units_per_em().max(1));
        Ok(Self {
            face,
            unidades_por_em,
        })
    }

    /// The glyph id of `c`, if the face has one.
    pub fn glifo(&self, c: char) -> Option<u16> {
        self.face.glyph_index(c).map(|g| g.0)
    }

    /// Advance width of `c` in points at `tamanho` points; characters without a
    /// glyph measure as the fallback glyph.
    pub fn largura_char(&self, c: char, tamanho: f32) -> f32 {
        let glifo = self
            .face
            .glyph_index(c)
            .or_else(|| self.face.glyph_index(SUBSTITUTO));
        let avanco = glifo
            .and_then(|g| self.face.glyph_hor_advance(g))
            .map(f32::from)
            .unwrap_or(self.unidades_por_em / 2.0);
        avanco / self.unidades_por_em * tamanho
    }

    /// Width of `texto` in points at `tamanho` points (no kerning).
    pub fn largura(&self, texto: &str, tamanho: f32) -> f32 {
        texto.chars().map(|c| self.largura_char(c, tamanho)).sum()
    }

    /// Ascender height as a fraction of the font size.
    pub fn ascendente(&self) -> f32 {
        f32::from(self.face.ascender()) / self.unidades_por_em
    }
}

/// Makes `texto` safe to draw with the embedded faces: control characters become
/// spaces, invisible formatting characters (variation selectors, zero-width
/// joiners, BOM) are removed, and characters neither face covers become
/// [`SUBSTITUTO`]. Never fails, whatever the input.
pub fn higienizar(texto: &str, fonte: &Fonte) -> String {
    let mut saida = String::with_capacity(texto.len());
    for c in texto.chars() {
        if c.is_control() {
            saida.push(' ');
        } else if invisivel(c) {
            continue;
        } else if fonte.glifo(c).is_some() {
            saida.push(c);
        } else {
            saida.push(SUBSTITUTO);
        }
    }
    saida
}

fn invisivel(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}'
        | '\u{E0000}'..='\u{E007F}'
        | '\u{1F3FB}'..='\u{1F3FF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fontes_embutidas_carregam_e_cobrem_o_portugues() {
        let fontes = Fontes::globais().expect("shipped fonts parse");
        let regular = fontes.fonte(Peso::Regular);
        for c in "ÁÉÍÓÚáéíóúÂÊÔâêôÃÕãõÇçÀàªº–—“”".chars() {
            assert!(regular.glifo(c).is_some(), "missing glyph for {c}");
        }
        assert!(regular.glifo(SUBSTITUTO).is_some());
        assert!(regular.largura("Câmara", 10.0) > 20.0);
    }

    #[test]
    fn emoji_e_controles_viram_substituto_ou_espaco() {
        let fontes = Fontes::globais().expect("shipped fonts parse");
        let regular = fontes.fonte(Peso::Regular);
        // DejaVu draws some emoticons itself; the party popper it lacks.
        assert_eq!(higienizar("a\u{1F600}b", regular), "a\u{1F600}b");
        assert_eq!(higienizar("a\u{1F389}b", regular), "a\u{FFFD}b");
        assert_eq!(higienizar("a\tb\u{0}c", regular), "a b c");
        assert_eq!(higienizar("❤\u{FE0F}", regular), "❤");
    }
}
