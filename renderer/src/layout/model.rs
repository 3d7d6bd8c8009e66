//! The document model: what a report says, with no positions in it.
//!
//! Report modules build a [`Document`] from database rows; the layout engine
//! decides where every line goes. A new report only builds these values, so it
//! never needs to change the engine.

/// A whole report, ready for layout.
#[derive(Debug, Clone)]
pub struct Document {
    /// PDF metadata title.
    pub titulo: String,
    /// Page size and the frame drawn around the content.
    pub formato: Formato,
    /// Content, top to bottom.
    pub blocos: Vec<Bloco>,
}

/// Page format of a document.
#[derive(Debug, Clone)]
pub enum Formato {
    /// A4 portrait with the chamber's header and footer on every page; content
    /// flows over as many pages as it needs.
    A4(Moldura),
    /// One label page of the given size in millimetres, no frame. Content is
    /// scaled down until it fits on that single page.
    Etiqueta { largura_mm: f32, altura_mm: f32 },
}

/// Header and footer repeated on every A4 page.
#[derive(Debug, Clone, Default)]
pub struct Moldura {
    /// Chamber name (`base_casalegislativa.nome`).
    pub casa: String,
    /// Line under the chamber name.
    pub subtitulo: String,
    /// Logo file contents (PNG or JPEG), when the file exists under the media root.
    pub logotipo: Option<Vec<u8>>,
    /// Optional heading repeated under the header on every page (the sessão
    /// summary repeats its title this way).
    pub cabecalho_extra: Option<String>,
    /// Rodapé: address, phone, site, e-mail.
    pub rodape: String,
    /// Date printed in the footer, already formatted (`dd/mm/YYYY`).
    pub data: String,
}

/// One block of content.
#[derive(Debug, Clone)]
pub enum Bloco {
    /// A paragraph of text, wrapped to the content width.
    Paragrafo(Paragrafo),
    /// A table with a header row; split across pages with the header repeated.
    Tabela(Tabela),
    /// A Code128 barcode of `dados` (printable ASCII), full content width.
    CodigoDeBarras { dados: String, altura_mm: f32 },
    /// Vertical space in points.
    Espaco(f32),
}

/// Typographic role of a paragraph; the engine maps roles to sizes and weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estilo {
    /// Report title.
    Titulo,
    /// Section heading.
    Secao,
    /// Body text.
    Corpo,
    /// Smaller text (notes inside tables).
    Nota,
}

/// Horizontal alignment of a paragraph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Alinhamento {
    #[default]
    Esquerda,
    Centro,
    Direita,
}

/// A run of text with one weight.
#[derive(Debug, Clone)]
pub struct Trecho {
    pub texto: String,
    pub negrito: bool,
}

/// A paragraph: runs of text sharing a style, wrapped together.
#[derive(Debug, Clone)]
pub struct Paragrafo {
    pub trechos: Vec<Trecho>,
    pub estilo: Estilo,
    pub alinhamento: Alinhamento,
}

impl Paragrafo {
    /// A paragraph of one plain run.
    pub fn simples(estilo: Estilo, texto: impl Into<String>) -> Self {
        Self {
            trechos: vec![Trecho {
                texto: texto.into(),
                negrito: matches!(estilo, Estilo::Titulo | Estilo::Secao),
            }],
            estilo,
            alinhamento: Alinhamento::Esquerda,
        }
    }

    /// "Rótulo: valor" with the label in bold.
    pub fn rotulado(estilo: Estilo, rotulo: &str, valor: impl Into<String>) -> Self {
        Self {
            trechos: vec![
                Trecho {
                    texto: format!("{rotulo}: "),
                    negrito: true,
                },
                Trecho {
                    texto: valor.into(),
                    negrito: false,
                },
            ],
            estilo,
            alinhamento: Alinhamento::Esquerda,
        }
    }

    /// The same paragraph, centred.
    pub fn centralizado(mut self) -> Self {
        self.alinhamento = Alinhamento::Centro;
        self
    }

    /// The same paragraph, aligned right.
    pub fn a_direita(mut self) -> Self {
        self.alinhamento = Alinhamento::Direita;
        self
    }
}

/// A table column.
#[derive(Debug, Clone)]
pub struct Coluna {
    /// Header text.
    pub titulo: String,
    /// Relative width; columns share the content width in proportion.
    pub peso: f32,
}

/// A table: header plus rows of cells; each cell holds paragraphs.
#[derive(Debug, Clone)]
pub struct Tabela {
    pub colunas: Vec<Coluna>,
    pub linhas: Vec<Vec<Celula>>,
}

/// One table cell.
pub type Celula = Vec<Paragrafo>;

/// Shorthand for the common body-text paragraph block.
pub fn corpo(texto: impl Into<String>) -> Bloco {
    Bloco::Paragrafo(Paragrafo::simples(Estilo::Corpo, texto))
}

/// Shorthand for a section heading block.
pub fn secao(texto: impl Into<String>) -> Bloco {
    Bloco::Paragrafo(Paragrafo::simples(Estilo::Secao, texto))
}

/// Shorthand for a cell with one body-text paragraph.
pub fn celula(texto: impl Into<String>) -> Celula {
    vec![Paragrafo::simples(Estilo::Corpo, texto)]
}
