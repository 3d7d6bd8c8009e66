//! Writes positioned pages as a PDF with printpdf.
//!
//! Fonts are subset here, per document, before printpdf sees them: only the
//! glyphs the pages use are kept (allsorts builds the smaller TTF with a cmap
//! for exactly those characters), so a one-page report carries a few kilobytes
//! of font instead of the 700 KB face. printpdf then embeds that subset with a
//! ToUnicode map, which is what lets `pdftotext` read accents back.

use std::collections::{BTreeMap, BTreeSet};

use allsorts::binary::read::ReadScope;
use allsorts::font_data::FontData;
use allsorts::subset::{subset, CmapTarget, SubsetProfile};
use allsorts::tag;
use printpdf::{
    Color, FontId, Line, LinePoint, Mm, Op, PaintMode, ParsedFont, PdfDocument, PdfFontHandle,
    PdfPage, PdfSaveOptions, Point, Pt, RawImage, Rect, Rgb, TextItem, XObjectId, XObjectTransform,
};

use super::fontes::{Fontes, Peso, DEJAVU_SANS, DEJAVU_SANS_BOLD};
use super::{Item, LayoutError, Pagina};

const PT_POR_MM: f32 = 72.0 / 25.4;

/// Serialises `paginas` into PDF bytes.
pub fn escrever(
    titulo: &str,
    paginas: &[Pagina],
    logotipo: Option<&[u8]>,
    fontes: &Fontes,
) -> Result<Vec<u8>, LayoutError> {
    let mut doc = PdfDocument::new(titulo);
    // printpdf dates a document 1970-01-01 unless told otherwise.
    let now = printpdf::OffsetDateTime::now_utc();
    doc.metadata.info.creation_date = now;
    doc.metadata.info.modification_date = now;
    doc.metadata.info.metadata_date = now;

    let ids = registrar_fontes(&mut doc, paginas, fontes)?;
    let logo = logotipo.and_then(|bytes| registrar_logotipo(&mut doc, bytes));

    let mut saida = Vec::with_capacity(paginas.len());
    for pagina in paginas {
        let mut ops = Vec::with_capacity(pagina.itens.len() * 6);
        for item in &pagina.itens {
            desenhar(&mut ops, item, &ids, logo.as_ref());
        }
        saida.push(PdfPage::new(
            Mm(pagina.largura / PT_POR_MM),
            Mm(pagina.altura / PT_POR_MM),
            ops,
        ));
    }
    doc.with_pages(saida);

    let opcoes = PdfSaveOptions {
        optimize: true,
        // Already subset above; printpdf's own subsetting needs its HTML stack.
        subset_fonts: false,
        secure: true,
        image_optimization: None,
    };
    let mut avisos = Vec::new();
    Ok(doc.save(&opcoes, &mut avisos))
}

/// The printpdf font ids for each weight used in the document.
type IdsDeFonte = BTreeMap<Peso, FontId>;

fn registrar_fontes(
    doc: &mut PdfDocument,
    paginas: &[Pagina],
    fontes: &Fontes,
) -> Result<IdsDeFonte, LayoutError> {
    let mut usados: BTreeMap<Peso, BTreeSet<char>> = BTreeMap::new();
    for pagina in paginas {
        for item in &pagina.itens {
            if let Item::Texto { peso, texto, .. } = item {
                usados.entry(*peso).or_default().extend(texto.chars());
            }
        }
    }

    let mut ids = BTreeMap::new();
    for (peso, caracteres) in usados {
        let fonte = fontes.fonte(peso);
        let glifos: BTreeSet<u16> = caracteres.iter().filter_map(|c| fonte.glifo(*c)).collect();
        let original = match peso {
            Peso::Regular => DEJAVU_SANS,
            Peso::Negrito => DEJAVU_SANS_BOLD,
        };
        let bytes = subconjunto(original, &glifos)?;
        let mut avisos = Vec::new();
        let parsed = ParsedFont::from_bytes(&bytes, 0, &mut avisos)
            .ok_or_else(|| LayoutError::Pdf("subset font does not parse".into()))?;
        ids.insert(peso, doc.add_font(&parsed));
    }
    Ok(ids)
}

/// A TTF holding glyph 0 (.notdef) and `glifos`, with a Unicode cmap for them.
fn subconjunto(original: &[u8], glifos: &BTreeSet<u16>) -> Result<Vec<u8>, LayoutError> {
    let dados = ReadScope::new(original)
        .read::<FontData<'_>>()
        .map_err(|e| LayoutError::Pdf(format!("font read: {e}")))?;
    let provedor = dados
        .table_provider(0)
        .map_err(|e| LayoutError::Pdf(format!("font tables: {e}")))?;
    // allsorts requires .notdef first and no duplicates.
    let ids: Vec<u16> = std::iter::once(0)
        .chain(glifos.iter().copied().filter(|g| *g != 0))
        .collect();
    // allsorts' PDF profile keeps `name`, which in DejaVu is 15 KB of licence
    // text per face (more than the glyphs of a typical report), and `post`, whose
    // 6,000 glyph names cost time to read; a PDF font program needs neither.
    // The hinting tables stay: the glyph programs call into `fpgm`.
    let tabelas = vec![
        tag::CMAP,
        tag::HEAD,
        tag::CVT,
        tag::FPGM,
        tag::HHEA,
        tag::HMTX,
        tag::MAXP,
        tag::PREP,
    ];
    subset(
        &provedor,
        &ids,
        &SubsetProfile::Custom(tabelas),
        CmapTarget::Unicode,
    )
    .map_err(|e| LayoutError::Pdf(format!("font subset: {e}")))
}

/// The logo as an image XObject, with its pixel size; a file that does not
/// decode as an image is skipped (the header then shows no logo).
fn registrar_logotipo(doc: &mut PdfDocument, bytes: &[u8]) -> Option<(XObjectId, f32, f32)> {
    let mut avisos = Vec::new();
    let imagem = RawImage::decode_from_bytes(bytes, &mut avisos).ok()?;
    let (w, h) = (imagem.width as f32, imagem.height as f32);
    if w < 1.0 || h < 1.0 {
        return None;
    }
    Some((doc.add_image(&imagem), w, h))
}

fn desenhar(
    ops: &mut Vec<Op>,
    item: &Item,
    ids: &IdsDeFonte,
    logo: Option<&(XObjectId, f32, f32)>,
) {
    match item {
        Item::Texto {
            x,
            y,
            tamanho,
            peso,
            texto,
        } => {
            let Some(id) = ids.get(peso) else { return };
            ops.push(Op::StartTextSection);
            ops.push(Op::SetFont {
                font: PdfFontHandle::External(id.clone()),
                size: Pt(*tamanho),
            });
            ops.push(Op::SetTextCursor {
                pos: Point {
                    x: Pt(*x),
                    y: Pt(*y),
                },
            });
            ops.push(Op::ShowText {
                items: vec![TextItem::Text(texto.clone())],
            });
            ops.push(Op::EndTextSection);
        }
        Item::Retangulo {
            x,
            y,
            largura,
            altura,
        } => {
            ops.push(Op::SetFillColor { col: preto() });
            ops.push(Op::DrawRectangle {
                rectangle: Rect {
                    mode: Some(PaintMode::Fill),
                    ..Rect::from_xywh(Pt(*x), Pt(*y), Pt(*largura), Pt(*altura))
                },
            });
        }
        Item::Linha {
            x1,
            y1,
            x2,
            y2,
            espessura,
        } => {
            ops.push(Op::SetOutlineColor { col: cinza() });
            ops.push(Op::SetOutlineThickness { pt: Pt(*espessura) });
            ops.push(Op::DrawLine {
                line: Line {
                    points: vec![
                        LinePoint {
                            p: Point {
                                x: Pt(*x1),
                                y: Pt(*y1),
                            },
                            bezier: false,
                        },
                        LinePoint {
                            p: Point {
                                x: Pt(*x2),
                                y: Pt(*y2),
                            },
                            bezier: false,
                        },
                    ],
                    is_closed: false,
                },
            });
        }
        Item::Logotipo {
            x,
            y,
            largura,
            altura,
        } => {
            let Some((id, w, h)) = logo else { return };
            // Fit the image inside the box, keeping its proportions.
            let escala = (largura / w).min(altura / h);
            ops.push(Op::UseXobject {
                id: id.clone(),
                transform: XObjectTransform {
                    translate_x: Some(Pt(*x)),
                    translate_y: Some(Pt(y + altura - h * escala)),
                    // At 72 dpi one pixel is one point; scale from there.
                    dpi: Some(72.0),
                    scale_x: Some(escala),
                    scale_y: Some(escala),
                    ..Default::default()
                },
            });
        }
    }
}

fn preto() -> Color {
    Color::Rgb(Rgb {
        r: 0.0,
        g: 0.0,
        b: 0.0,
        icc_profile: None,
    })
}

fn cinza() -> Color {
    Color::Rgb(Rgb {
        r: 0.45,
        g: 0.45,
        b: 0.45,
        icc_profile: None,
    })
}
