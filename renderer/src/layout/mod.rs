//! The layout engine: turns a [`model::Document`] into positioned pages and then
//! into PDF bytes.
//!
//! It owns everything about where ink goes: line breaking by measured glyph
//! advances (`fontes`), page flow with the header and footer frame on every A4
//! page, tables split across pages with their header repeated, labels scaled
//! until they fit one page, and Code128 barcodes drawn as rectangles. It knows
//! nothing about SAPL's tables; reports hand it a model and get bytes back.

pub mod fontes;
pub mod model;
mod pdf;
mod quebra;

use barcoders::sym::code128::Code128;

use fontes::{Fontes, Peso};
use model::{Alinhamento, Bloco, Document, Estilo, Formato, Moldura, Paragrafo, Tabela};
use quebra::{quebrar, Linha};

/// Points per millimetre.
const PT_POR_MM: f32 = 72.0 / 25.4;
const A4_LARGURA: f32 = 210.0 * PT_POR_MM;
const A4_ALTURA: f32 = 297.0 * PT_POR_MM;
const MARGEM_A4: f32 = 15.0 * PT_POR_MM;
const MARGEM_ETIQUETA: f32 = 1.5 * PT_POR_MM;
/// Inner padding of a table cell, in points.
const RESPIRO_CELULA: f32 = 3.0;
/// Smallest scale a label's content is shrunk to before it is clipped.
const ESCALA_MINIMA: f32 = 0.3;

/// A fault in turning a model into a PDF. Every input string is drawable, so
/// these only arise from broken embedded assets or the PDF writer.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The embedded font files do not parse.
    #[error(transparent)]
    Fonte(#[from] fontes::FonteInvalida),
    /// Subsetting or writing the PDF failed.
    #[error("PDF writer failed: {0}")]
    Pdf(String),
}

/// Lays `doc` out and writes it as a PDF.
pub fn renderizar(doc: &Document) -> Result<Vec<u8>, LayoutError> {
    let fontes = Fontes::globais()?;
    let paginas = compor(doc, fontes);
    let logotipo = match &doc.formato {
        Formato::A4(moldura) => moldura.logotipo.as_deref(),
        Formato::Etiqueta { .. } => None,
    };
    pdf::escrever(&doc.titulo, &paginas, logotipo, fontes)
}

/// One positioned page, in points with the origin at the bottom left (PDF's).
#[derive(Debug, Clone, Default)]
pub struct Pagina {
    pub largura: f32,
    pub altura: f32,
    pub itens: Vec<Item>,
}

/// Something drawn on a page.
#[derive(Debug, Clone)]
pub enum Item {
    /// A run of text; `y` is the baseline.
    Texto {
        x: f32,
        y: f32,
        tamanho: f32,
        peso: Peso,
        texto: String,
    },
    /// A filled black rectangle (barcode bars).
    Retangulo {
        x: f32,
        y: f32,
        largura: f32,
        altura: f32,
    },
    /// A grey rule.
    Linha {
        x1: f32,
        y1: f32,
        x2: f32,
        y2: f32,
        espessura: f32,
    },
    /// The chamber logo, scaled into this box.
    Logotipo {
        x: f32,
        y: f32,
        largura: f32,
        altura: f32,
    },
}

/// Size in points and weight for a paragraph role at scale 1.
fn tipografia(estilo: Estilo) -> (f32, f32) {
    // (font size, space after the paragraph)
    match estilo {
        Estilo::Titulo => (13.0, 6.0),
        Estilo::Secao => (11.5, 3.0),
        Estilo::Corpo => (9.5, 3.0),
        Estilo::Nota => (8.0, 1.5),
    }
}

fn entrelinha(tamanho: f32) -> f32 {
    tamanho * 1.28
}

/// Positions every block of `doc` on pages.
pub fn compor(doc: &Document, fontes: &Fontes) -> Vec<Pagina> {
    match &doc.formato {
        Formato::A4(moldura) => compor_a4(doc, moldura, fontes),
        Formato::Etiqueta {
            largura_mm,
            altura_mm,
        } => compor_etiqueta(doc, *largura_mm, *altura_mm, fontes),
    }
}

fn compor_a4(doc: &Document, moldura: &Moldura, fontes: &Fontes) -> Vec<Pagina> {
    let largura_util = A4_LARGURA - 2.0 * MARGEM_A4;
    let cabecalho = Cabecalho::medir(moldura, largura_util, fontes);
    let rodape = Rodape::medir(moldura, largura_util, fontes);

    let mut fluxo = Fluxo {
        paginas: Vec::new(),
        largura_pagina: A4_LARGURA,
        altura_pagina: A4_ALTURA,
        x: MARGEM_A4,
        largura: largura_util,
        topo: A4_ALTURA - MARGEM_A4 - cabecalho.altura,
        base: MARGEM_A4 + rodape.altura,
        y: 0.0,
        escala: 1.0,
        unica_pagina: false,
        transbordou: false,
        fontes,
    };
    fluxo.nova_pagina();
    for bloco in &doc.blocos {
        fluxo.bloco(bloco);
    }

    for (indice, pagina) in fluxo.paginas.iter_mut().enumerate() {
        // Header first, then content, then footer: text extraction reads the
        // page in that order.
        let conteudo = std::mem::take(&mut pagina.itens);
        cabecalho.desenhar(pagina, fontes);
        pagina.itens.extend(conteudo);
        rodape.desenhar(pagina, indice + 1, fontes);
    }
    fluxo.paginas
}

fn compor_etiqueta(
    doc: &Document,
    largura_mm: f32,
    altura_mm: f32,
    fontes: &Fontes,
) -> Vec<Pagina> {
    let largura = medida_de_etiqueta(largura_mm) * PT_POR_MM;
    let altura = medida_de_etiqueta(altura_mm) * PT_POR_MM;

    let mut escala = 1.0;
    loop {
        let mut fluxo = Fluxo {
            paginas: Vec::new(),
            largura_pagina: largura,
            altura_pagina: altura,
            x: MARGEM_ETIQUETA,
            largura: largura - 2.0 * MARGEM_ETIQUETA,
            topo: altura - MARGEM_ETIQUETA,
            base: MARGEM_ETIQUETA,
            y: 0.0,
            escala,
            unica_pagina: true,
            transbordou: false,
            fontes,
        };
        fluxo.nova_pagina();
        for bloco in &doc.blocos {
            fluxo.bloco(bloco);
        }
        // A label is one page: shrink until everything fits, and past the
        // minimum scale accept the clipped version rather than a second page.
        if !fluxo.transbordou || escala <= ESCALA_MINIMA {
            return fluxo.paginas;
        }
        escala = (escala - 0.05).max(ESCALA_MINIMA);
    }
}

/// A configured label side in millimetres, kept between 1 cm and 1 m: the table
/// is edited by hand and may hold zero, negative or NaN values.
fn medida_de_etiqueta(mm: f32) -> f32 {
    if mm.is_nan() {
        return 10.0;
    }
    mm.clamp(10.0, 1000.0)
}

/// Page flow state: the current page and the cursor on it.
struct Fluxo<'f> {
    paginas: Vec<Pagina>,
    largura_pagina: f32,
    altura_pagina: f32,
    /// Left edge and width of the content box.
    x: f32,
    largura: f32,
    /// Top and bottom of the content box.
    topo: f32,
    base: f32,
    /// Top of the next line to place (it grows downwards).
    y: f32,
    escala: f32,
    /// Labels: never add a page; record that content did not fit instead.
    unica_pagina: bool,
    transbordou: bool,
    fontes: &'f Fontes,
}

impl Fluxo<'_> {
    fn nova_pagina(&mut self) -> bool {
        if self.unica_pagina && !self.paginas.is_empty() {
            self.transbordou = true;
            return false;
        }
        self.paginas.push(Pagina {
            largura: self.largura_pagina,
            altura: self.altura_pagina,
            itens: Vec::new(),
        });
        self.y = self.topo;
        true
    }

    fn restante(&self) -> f32 {
        self.y - self.base
    }

    fn capacidade(&self) -> f32 {
        self.topo - self.base
    }

    /// Makes room for `altura` points, starting a page if needed. Returns false
    /// when a label ran out of room (the content is then dropped).
    fn garantir(&mut self, altura: f32) -> bool {
        if self.transbordou {
            return false;
        }
        if altura <= self.restante() + 0.01 || self.y >= self.topo - 0.01 {
            // Fits, or the page is empty and nothing more can be done.
            if self.unica_pagina && altura > self.restante() + 0.01 {
                self.transbordou = true;
                return false;
            }
            return true;
        }
        self.nova_pagina()
    }

    fn pagina(&mut self) -> &mut Pagina {
        if self.paginas.is_empty() {
            self.paginas.push(Pagina {
                largura: self.largura_pagina,
                altura: self.altura_pagina,
                itens: Vec::new(),
            });
        }
        let ultima = self.paginas.len() - 1;
        &mut self.paginas[ultima]
    }

    fn bloco(&mut self, bloco: &Bloco) {
        match bloco {
            Bloco::Paragrafo(p) => self.paragrafo(p),
            Bloco::Tabela(t) => self.tabela(t),
            Bloco::CodigoDeBarras { dados, altura_mm } => self.codigo_de_barras(dados, *altura_mm),
            Bloco::Espaco(pontos) => {
                let altura = pontos * self.escala;
                if self.restante() > altura {
                    self.y -= altura;
                }
            }
        }
    }

    fn paragrafo(&mut self, p: &Paragrafo) {
        let (tamanho, depois) = tipografia(p.estilo);
        let tamanho = tamanho * self.escala;
        let linhas = quebrar(p, self.largura, tamanho, self.fontes);
        let altura_linha = entrelinha(tamanho);

        // Keep a heading with the first lines of what follows it.
        if matches!(p.estilo, Estilo::Titulo | Estilo::Secao) && !self.unica_pagina {
            let reserva = altura_linha * linhas.len() as f32 + 3.0 * entrelinha(9.5);
            if reserva < self.capacidade() && !self.garantir(reserva) {
                return;
            }
        }

        for linha in &linhas {
            if !self.garantir(altura_linha) {
                return;
            }
            let x = self.x + deslocamento(p.alinhamento, self.largura, linha.largura);
            let base = self.y - tamanho * self.fontes.fonte(Peso::Regular).ascendente();
            emitir_linha(self.pagina(), linha, x, base, tamanho);
            self.y -= altura_linha;
        }
        let espaco = depois * self.escala;
        if self.restante() > espaco {
            self.y -= espaco;
        }
    }

    fn codigo_de_barras(&mut self, dados: &str, altura_mm: f32) {
        let modulos = codificar_code128(dados);
        if modulos.is_empty() {
            return;
        }
        let altura = altura_mm * PT_POR_MM * self.escala;
        if !self.garantir(altura) {
            return;
        }
        let largura_modulo = self.largura / modulos.len() as f32;
        let (x0, topo) = (self.x, self.y);
        let pagina = self.pagina();
        let mut inicio: Option<usize> = None;
        for (i, m) in modulos.iter().chain(std::iter::once(&0)).enumerate() {
            match (*m == 1, inicio) {
                (true, None) => inicio = Some(i),
                (false, Some(s)) => {
                    pagina.itens.push(Item::Retangulo {
                        x: x0 + s as f32 * largura_modulo,
                        y: topo - altura,
                        largura: (i - s) as f32 * largura_modulo,
                        altura,
                    });
                    inicio = None;
                }
                _ => {}
            }
        }
        self.y -= altura + 2.0 * self.escala;
    }

    fn tabela(&mut self, tabela: &Tabela) {
        if tabela.colunas.is_empty() {
            return;
        }
        let soma: f32 = tabela.colunas.iter().map(|c| c.peso.max(0.01)).sum();
        let larguras: Vec<f32> = tabela
            .colunas
            .iter()
            .map(|c| self.largura * c.peso.max(0.01) / soma)
            .collect();
        let cabecalho: Vec<Vec<Linha>> = tabela
            .colunas
            .iter()
            .zip(&larguras)
            .map(|(coluna, largura)| {
                let p = Paragrafo {
                    trechos: vec![model::Trecho {
                        texto: coluna.titulo.clone(),
                        negrito: true,
                    }],
                    estilo: Estilo::Corpo,
                    alinhamento: Alinhamento::Esquerda,
                };
                let tamanho = tipografia(Estilo::Corpo).0 * self.escala;
                quebrar(&p, largura - 2.0 * RESPIRO_CELULA, tamanho, self.fontes)
            })
            .collect();
        let tamanho_cabecalho = tipografia(Estilo::Corpo).0 * self.escala;
        let altura_cabecalho = cabecalho
            .iter()
            .map(|l| l.len() as f32 * entrelinha(tamanho_cabecalho))
            .fold(0.0, f32::max)
            + 2.0 * RESPIRO_CELULA;

        // Start the table on a new page if not even its header and one line fit.
        if !self.garantir(altura_cabecalho + 2.0 * entrelinha(tamanho_cabecalho)) {
            return;
        }
        self.cabecalho_tabela(&cabecalho, &larguras, tamanho_cabecalho, altura_cabecalho);

        for linha in &tabela.linhas {
            let celulas: Vec<Vec<LinhaCelula>> = linha
                .iter()
                .zip(&larguras)
                .map(|(celula, largura)| self.linhas_da_celula(celula, *largura))
                .collect();
            let altura_total = celulas
                .iter()
                .map(|c| c.iter().map(|l| l.altura).sum::<f32>())
                .fold(0.0, f32::max)
                + 2.0 * RESPIRO_CELULA;

            // A row that fits on a fresh page is never split.
            if altura_total > self.restante()
                && altura_total <= self.capacidade() - altura_cabecalho
            {
                if !self.nova_pagina() {
                    return;
                }
                self.cabecalho_tabela(&cabecalho, &larguras, tamanho_cabecalho, altura_cabecalho);
            }

            let mut proximas = vec![0usize; celulas.len()];
            let mut inicio_de_pagina = self.topo - self.y <= altura_cabecalho + 0.5;
            loop {
                let disponivel = self.restante() - 2.0 * RESPIRO_CELULA;
                let topo = self.y;
                let mut usado: f32 = 0.0;
                let mut x = self.x;
                for (indice, celula) in celulas.iter().enumerate() {
                    let mut y = topo - RESPIRO_CELULA;
                    let mut altura_celula = 0.0;
                    while let Some(l) = celula.get(proximas[indice]) {
                        let cabe = altura_celula + l.altura <= disponivel;
                        // On a fresh page place at least one line, so a row taller
                        // than any page still advances.
                        let forcar = altura_celula == 0.0 && inicio_de_pagina;
                        if !cabe && !forcar {
                            break;
                        }
                        let base = y - l.tamanho * self.fontes.fonte(Peso::Regular).ascendente();
                        let x_linha = x + RESPIRO_CELULA + l.recuo;
                        emitir_linha(self.pagina(), &l.linha, x_linha, base, l.tamanho);
                        y -= l.altura;
                        altura_celula += l.altura;
                        proximas[indice] += 1;
                    }
                    usado = usado.max(altura_celula);
                    x += larguras.get(indice).copied().unwrap_or(0.0);
                }
                self.y = topo - usado - 2.0 * RESPIRO_CELULA;
                let (x_ini, x_fim, y_regua) = (self.x, self.x + self.largura, self.y);
                self.pagina().itens.push(Item::Linha {
                    x1: x_ini,
                    y1: y_regua,
                    x2: x_fim,
                    y2: y_regua,
                    espessura: 0.3,
                });

                let pendente = celulas.iter().zip(&proximas).any(|(c, p)| *p < c.len());
                if !pendente {
                    break;
                }
                if !self.nova_pagina() {
                    return;
                }
                self.cabecalho_tabela(&cabecalho, &larguras, tamanho_cabecalho, altura_cabecalho);
                inicio_de_pagina = true;
            }
        }
        let espaco = 6.0 * self.escala;
        if self.restante() > espaco {
            self.y -= espaco;
        }
    }

    fn cabecalho_tabela(
        &mut self,
        cabecalho: &[Vec<Linha>],
        larguras: &[f32],
        tamanho: f32,
        altura: f32,
    ) {
        let topo = self.y;
        let ascendente = self.fontes.fonte(Peso::Regular).ascendente();
        let (x0, largura_total) = (self.x, self.largura);
        let pagina = self.pagina();
        let mut x = x0;
        for (linhas, largura) in cabecalho.iter().zip(larguras) {
            let mut y = topo - RESPIRO_CELULA;
            for linha in linhas {
                emitir_linha(
                    pagina,
                    linha,
                    x + RESPIRO_CELULA,
                    y - tamanho * ascendente,
                    tamanho,
                );
                y -= entrelinha(tamanho);
            }
            x += largura;
        }
        for y in [topo, topo - altura] {
            pagina.itens.push(Item::Linha {
                x1: x0,
                y1: y,
                x2: x0 + largura_total,
                y2: y,
                espessura: 0.8,
            });
        }
        self.y = topo - altura;
    }

    fn linhas_da_celula(&self, celula: &[Paragrafo], largura: f32) -> Vec<LinhaCelula> {
        let mut saida = Vec::new();
        for (indice, p) in celula.iter().enumerate() {
            let (tamanho, depois) = tipografia(p.estilo);
            let tamanho = tamanho * self.escala;
            let linhas = quebrar(p, largura - 2.0 * RESPIRO_CELULA, tamanho, self.fontes);
            let total = linhas.len();
            for (i, linha) in linhas.into_iter().enumerate() {
                let mut altura = entrelinha(tamanho);
                if i + 1 == total && indice + 1 < celula.len() {
                    altura += depois * self.escala;
                }
                let recuo =
                    deslocamento(p.alinhamento, largura - 2.0 * RESPIRO_CELULA, linha.largura);
                saida.push(LinhaCelula {
                    linha,
                    tamanho,
                    altura,
                    recuo,
                });
            }
        }
        saida
    }
}

/// A wrapped line inside a table cell, with the height it takes.
struct LinhaCelula {
    linha: Linha,
    tamanho: f32,
    altura: f32,
    recuo: f32,
}

fn deslocamento(alinhamento: Alinhamento, largura: f32, ocupado: f32) -> f32 {
    match alinhamento {
        Alinhamento::Esquerda => 0.0,
        Alinhamento::Centro => ((largura - ocupado) / 2.0).max(0.0),
        Alinhamento::Direita => (largura - ocupado).max(0.0),
    }
}

fn emitir_linha(pagina: &mut Pagina, linha: &Linha, x: f32, base: f32, tamanho: f32) {
    for segmento in &linha.segmentos {
        pagina.itens.push(Item::Texto {
            x: x + segmento.x,
            y: base,
            tamanho,
            peso: segmento.peso,
            texto: segmento.texto.clone(),
        });
    }
}

/// Code128 modules (1 = bar) for `dados`, using character set B. Characters
/// outside printable ASCII are dropped first (callers transliterate).
fn codificar_code128(dados: &str) -> Vec<u8> {
    let ascii: String = dados.chars().filter(|c| (' '..='~').contains(c)).collect();
    if ascii.is_empty() {
        return Vec::new();
    }
    Code128::new(format!("\u{0181}{ascii}"))
        .map(|c| c.encode())
        .unwrap_or_default()
}

/// The header block, measured once and drawn on every page.
struct Cabecalho {
    altura: f32,
    casa: Vec<Linha>,
    subtitulo: Vec<Linha>,
    extra: Vec<Linha>,
    tem_logo: bool,
}

const TAMANHO_CASA: f32 = 13.0;
const TAMANHO_SUBTITULO: f32 = 9.0;
const TAMANHO_EXTRA: f32 = 11.0;
const TAMANHO_RODAPE: f32 = 7.5;
const LOGO: f32 = 16.0 * PT_POR_MM;

impl Cabecalho {
    fn medir(moldura: &Moldura, largura: f32, fontes: &Fontes) -> Self {
        let tem_logo = moldura.logotipo.is_some();
        let largura_texto = if tem_logo {
            largura - LOGO - 6.0
        } else {
            largura
        };
        let casa = quebrar(
            &Paragrafo::simples(Estilo::Titulo, moldura.casa.clone()),
            largura_texto,
            TAMANHO_CASA,
            fontes,
        );
        let subtitulo = quebrar(
            &Paragrafo::simples(Estilo::Corpo, moldura.subtitulo.clone()),
            largura_texto,
            TAMANHO_SUBTITULO,
            fontes,
        );
        let extra = moldura
            .cabecalho_extra
            .as_ref()
            .map(|t| {
                quebrar(
                    &Paragrafo::simples(Estilo::Secao, t.clone()),
                    largura,
                    TAMANHO_EXTRA,
                    fontes,
                )
            })
            .unwrap_or_default();
        let texto = casa.len() as f32 * entrelinha(TAMANHO_CASA)
            + subtitulo.len() as f32 * entrelinha(TAMANHO_SUBTITULO);
        let bloco = if tem_logo { texto.max(LOGO) } else { texto };
        let extra_altura = if extra.is_empty() {
            0.0
        } else {
            6.0 + extra.len() as f32 * entrelinha(TAMANHO_EXTRA)
        };
        Self {
            altura: bloco + extra_altura + 12.0,
            casa,
            subtitulo,
            extra,
            tem_logo,
        }
    }

    fn desenhar(&self, pagina: &mut Pagina, fontes: &Fontes) {
        let ascendente = fontes.fonte(Peso::Regular).ascendente();
        let topo = A4_ALTURA - MARGEM_A4;
        let largura = A4_LARGURA - 2.0 * MARGEM_A4;
        let mut x = MARGEM_A4;
        let mut largura_texto = largura;
        if self.tem_logo {
            pagina.itens.push(Item::Logotipo {
                x: MARGEM_A4,
                y: topo - LOGO,
                largura: LOGO,
                altura: LOGO,
            });
            x += LOGO + 6.0;
            largura_texto -= LOGO + 6.0;
        }
        let mut y = topo;
        for (linhas, tamanho) in [
            (&self.casa, TAMANHO_CASA),
            (&self.subtitulo, TAMANHO_SUBTITULO),
        ] {
            for linha in linhas {
                let dx = deslocamento(Alinhamento::Centro, largura_texto, linha.largura);
                emitir_linha(pagina, linha, x + dx, y - tamanho * ascendente, tamanho);
                y -= entrelinha(tamanho);
            }
        }
        if self.tem_logo {
            y = y.min(topo - LOGO);
        }
        if !self.extra.is_empty() {
            y -= 6.0;
            for linha in &self.extra {
                let dx = deslocamento(Alinhamento::Centro, largura, linha.largura);
                emitir_linha(
                    pagina,
                    linha,
                    MARGEM_A4 + dx,
                    y - TAMANHO_EXTRA * ascendente,
                    TAMANHO_EXTRA,
                );
                y -= entrelinha(TAMANHO_EXTRA);
            }
        }
        y -= 4.0;
        pagina.itens.push(Item::Linha {
            x1: MARGEM_A4,
            y1: y,
            x2: MARGEM_A4 + largura,
            y2: y,
            espessura: 0.6,
        });
    }
}

/// The footer block, measured once and drawn on every page with its number.
struct Rodape {
    altura: f32,
    rodape: Vec<Linha>,
    data: String,
}

impl Rodape {
    fn medir(moldura: &Moldura, largura: f32, fontes: &Fontes) -> Self {
        let rodape = quebrar(
            &Paragrafo::simples(Estilo::Nota, moldura.rodape.clone()),
            largura,
            TAMANHO_RODAPE,
            fontes,
        );
        let altura = 6.0 + (rodape.len() as f32 + 1.0) * entrelinha(TAMANHO_RODAPE) + 4.0;
        Self {
            altura,
            rodape,
            data: moldura.data.clone(),
        }
    }

    fn desenhar(&self, pagina: &mut Pagina, numero: usize, fontes: &Fontes) {
        let ascendente = fontes.fonte(Peso::Regular).ascendente();
        let largura = A4_LARGURA - 2.0 * MARGEM_A4;
        let mut y = MARGEM_A4 + self.altura - 4.0;
        pagina.itens.push(Item::Linha {
            x1: MARGEM_A4,
            y1: y,
            x2: MARGEM_A4 + largura,
            y2: y,
            espessura: 0.6,
        });
        y -= 4.0;
        for linha in &self.rodape {
            let dx = deslocamento(Alinhamento::Centro, largura, linha.largura);
            emitir_linha(
                pagina,
                linha,
                MARGEM_A4 + dx,
                y - TAMANHO_RODAPE * ascendente,
                TAMANHO_RODAPE,
            );
            y -= entrelinha(TAMANHO_RODAPE);
        }
        let base = y - TAMANHO_RODAPE * ascendente;
        let data = Paragrafo::simples(Estilo::Nota, self.data.clone());
        for linha in quebrar(&data, largura / 2.0, TAMANHO_RODAPE, fontes) {
            emitir_linha(pagina, &linha, MARGEM_A4, base, TAMANHO_RODAPE);
        }
        let numero = Paragrafo::simples(Estilo::Nota, format!("Página {numero}")).a_direita();
        for linha in quebrar(&numero, largura / 2.0, TAMANHO_RODAPE, fontes) {
            let dx = deslocamento(Alinhamento::Direita, largura / 2.0, linha.largura);
            emitir_linha(
                pagina,
                &linha,
                MARGEM_A4 + largura / 2.0 + dx,
                base,
                TAMANHO_RODAPE,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::model::{celula, corpo, Coluna};
    use super::*;

    fn a4(blocos: Vec<Bloco>) -> Document {
        Document {
            titulo: "t".into(),
            formato: Formato::A4(Moldura {
                casa: "Câmara".into(),
                subtitulo: "Sistema".into(),
                rodape: "Rua".into(),
                data: "03/12/2026".into(),
                ..Default::default()
            }),
            blocos,
        }
    }

    fn textos(p: &Pagina) -> Vec<&str> {
        p.itens
            .iter()
            .filter_map(|i| match i {
                Item::Texto { texto, .. } => Some(texto.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn tabela_longa_repete_cabecalho_e_numera_paginas() {
        let fontes = Fontes::globais().expect("fonts");
        let tabela = Tabela {
            colunas: vec![
                Coluna {
                    titulo: "Data".into(),
                    peso: 1.0,
                },
                Coluna {
                    titulo: "Status".into(),
                    peso: 1.0,
                },
            ],
            linhas: (0..300)
                .map(|i| vec![celula(format!("linha {i}")), celula("ok")])
                .collect(),
        };
        let paginas = compor(&a4(vec![Bloco::Tabela(tabela)]), fontes);
        assert!(paginas.len() > 3);
        for (i, p) in paginas.iter().enumerate() {
            let t = textos(p);
            assert_eq!(t.first().copied(), Some("Câmara"), "header first");
            assert!(
                t.contains(&"Data") && t.contains(&"Status"),
                "table header on page {i}"
            );
            assert!(t.contains(&format!("Página {}", i + 1).as_str()));
            for item in &p.itens {
                if let Item::Texto { y, .. } = item {
                    assert!(*y > 0.0 && *y < A4_ALTURA, "text off the page");
                }
            }
        }
    }

    #[test]
    fn linha_mais_alta_que_a_pagina_continua_na_seguinte() {
        let fontes = Fontes::globais().expect("fonts");
        let enorme = "palavra ".repeat(4000);
        let tabela = Tabela {
            colunas: vec![Coluna {
                titulo: "Ementa".into(),
                peso: 1.0,
            }],
            linhas: vec![vec![celula(enorme)]],
        };
        let paginas = compor(&a4(vec![Bloco::Tabela(tabela)]), fontes);
        assert!(paginas.len() >= 2);
        let palavras: usize = paginas
            .iter()
            .flat_map(textos)
            .map(|t| t.matches("palavra").count())
            .sum();
        assert_eq!(palavras, 4000, "no word lost across the split");
    }

    #[test]
    fn etiqueta_encolhe_para_caber_numa_pagina() {
        let fontes = Fontes::globais().expect("fonts");
        let doc = Document {
            titulo: "e".into(),
            formato: Formato::Etiqueta {
                largura_mm: 50.0,
                altura_mm: 29.0,
            },
            blocos: vec![
                corpo("texto ".repeat(60)),
                Bloco::CodigoDeBarras {
                    dados: "1/2025-PL".into(),
                    altura_mm: 7.0,
                },
            ],
        };
        let paginas = compor(&doc, fontes);
        assert_eq!(paginas.len(), 1);
        let barras = paginas[0]
            .itens
            .iter()
            .filter(|i| matches!(i, Item::Retangulo { .. }))
            .count();
        assert!(barras > 10, "barcode drawn");
    }

    #[test]
    fn medidas_absurdas_de_etiqueta_ficam_entre_1_cm_e_1_m() {
        assert_eq!(medida_de_etiqueta(f32::NAN), 10.0);
        assert_eq!(medida_de_etiqueta(-5.0), 10.0);
        assert_eq!(medida_de_etiqueta(0.0), 10.0);
        assert_eq!(medida_de_etiqueta(62.0), 62.0);
        assert_eq!(medida_de_etiqueta(f32::INFINITY), 1000.0);
    }

    #[test]
    fn code128_de_texto_ascii() {
        let modulos = codificar_code128("1/2025-PL");
        // Start + 9 symbols + checksum = 11 symbols of 11 modules, stop has 13.
        assert_eq!(modulos.len(), 11 * 11 + 13);
        assert!(codificar_code128("").is_empty());
        assert!(
            codificar_code128("ção").len() > 11,
            "non-ASCII dropped, rest kept"
        );
    }
}
