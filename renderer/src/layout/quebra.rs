//! Line breaking: splits a paragraph's runs into lines no wider than a column,
//! measuring each word with the embedded font's glyph advances.
//!
//! Breaks happen at whitespace; a word wider than the column (a URL, a
//! 300-character token) is cut between characters so nothing leaves its box.

use super::fontes::{higienizar, Fontes, Peso};
use super::model::Paragrafo;

/// A run of one weight inside a line, `x` points from the line's start.
#[derive(Debug, Clone)]
pub struct Segmento {
    pub x: f32,
    pub peso: Peso,
    pub texto: String,
}

/// One wrapped line.
#[derive(Debug, Clone, Default)]
pub struct Linha {
    pub segmentos: Vec<Segmento>,
    /// Width actually used, in points.
    pub largura: f32,
}

/// A word (or a piece of one) with its weight and whether a space precedes it.
struct Palavra {
    peso: Peso,
    texto: String,
    espaco_antes: bool,
}

/// Wraps `p` to `largura` points at `tamanho` points. Always returns at least one
/// line (possibly empty) so empty fields still take their place.
pub fn quebrar(p: &Paragrafo, largura: f32, tamanho: f32, fontes: &Fontes) -> Vec<Linha> {
    let largura = largura.max(tamanho); // room for at least one glyph
    let palavras = palavras(p, fontes);
    let mut linhas = Vec::new();
    let mut atual = Linha::default();

    for palavra in palavras {
        let fonte = fontes.fonte(palavra.peso);
        let espaco = if palavra.espaco_antes && !atual.segmentos.is_empty() {
            fonte.largura(" ", tamanho)
        } else {
            0.0
        };
        let largura_palavra = fonte.largura(&palavra.texto, tamanho);

        if atual.largura + espaco + largura_palavra <= largura {
            acrescentar(&mut atual, &palavra, espaco, largura_palavra);
            continue;
        }
        if !atual.segmentos.is_empty() {
            linhas.push(std::mem::take(&mut atual));
        }
        if largura_palavra <= largura {
            acrescentar(&mut atual, &palavra, 0.0, largura_palavra);
            continue;
        }

        // Too wide for any line: cut it between characters.
        let mut pedaco = String::new();
        let mut largura_pedaco = 0.0;
        for c in palavra.texto.chars() {
            let w = fonte.largura_char(c, tamanho);
            if largura_pedaco + w > largura && !pedaco.is_empty() {
                let cheio = Palavra {
                    peso: palavra.peso,
                    texto: std::mem::take(&mut pedaco),
                    espaco_antes: false,
                };
                acrescentar(&mut atual, &cheio, 0.0, largura_pedaco);
                linhas.push(std::mem::take(&mut atual));
                largura_pedaco = 0.0;
            }
            pedaco.push(c);
            largura_pedaco += w;
        }
        if !pedaco.is_empty() {
            let resto = Palavra {
                peso: palavra.peso,
                texto: pedaco,
                espaco_antes: false,
            };
            acrescentar(&mut atual, &resto, 0.0, largura_pedaco);
        }
    }
    linhas.push(atual);
    linhas
}

fn acrescentar(linha: &mut Linha, palavra: &Palavra, espaco: f32, largura: f32) {
    let mesmo_peso = linha
        .segmentos
        .last()
        .is_some_and(|s| s.peso == palavra.peso);
    if mesmo_peso {
        if let Some(ultimo) = linha.segmentos.last_mut() {
            if espaco > 0.0 {
                ultimo.texto.push(' ');
            }
            ultimo.texto.push_str(&palavra.texto);
        }
    } else {
        linha.segmentos.push(Segmento {
            x: linha.largura + espaco,
            peso: palavra.peso,
            texto: palavra.texto.clone(),
        });
    }
    linha.largura += espaco + largura;
}

/// Splits the runs into words, sanitising each run for its face.
fn palavras(p: &Paragrafo, fontes: &Fontes) -> Vec<Palavra> {
    let mut saida = Vec::new();
    let mut espaco_pendente = false;
    for trecho in &p.trechos {
        let peso = if trecho.negrito {
            Peso::Negrito
        } else {
            Peso::Regular
        };
        let texto = higienizar(&trecho.texto, fontes.fonte(peso));
        let mut primeira = true;
        for pedaco in texto.split(' ') {
            if pedaco.is_empty() {
                espaco_pendente = true;
                continue;
            }
            saida.push(Palavra {
                peso,
                texto: pedaco.to_string(),
                espaco_antes: espaco_pendente || (!primeira && !saida.is_empty()),
            });
            primeira = false;
            espaco_pendente = false;
        }
        if texto.ends_with(' ') {
            espaco_pendente = true;
        }
    }
    saida
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::model::{Estilo, Trecho};

    fn texto(linhas: &[Linha]) -> Vec<String> {
        linhas
            .iter()
            .map(|l| {
                l.segmentos
                    .iter()
                    .map(|s| s.texto.as_str())
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect()
    }

    #[test]
    fn quebra_em_espacos_dentro_da_largura() {
        let fontes = Fontes::globais().expect("fonts");
        let p = Paragrafo::simples(
            Estilo::Corpo,
            "Dispõe sobre a criação do programa municipal",
        );
        let linhas = quebrar(&p, 80.0, 10.0, fontes);
        assert!(linhas.len() > 1);
        for l in &linhas {
            assert!(l.largura <= 80.0 + 0.01, "line too wide: {}", l.largura);
        }
        assert_eq!(
            texto(&linhas).join(" "),
            "Dispõe sobre a criação do programa municipal"
        );
    }

    #[test]
    fn palavra_gigante_e_cortada() {
        let fontes = Fontes::globais().expect("fonts");
        let palavra = "x".repeat(300);
        let p = Paragrafo::simples(Estilo::Corpo, palavra.clone());
        let linhas = quebrar(&p, 100.0, 10.0, fontes);
        assert!(linhas.len() >= 3);
        assert!(linhas.iter().all(|l| l.largura <= 100.01));
        assert_eq!(texto(&linhas).concat(), palavra);
    }

    #[test]
    fn rotulo_em_negrito_e_valor_regular() {
        let fontes = Fontes::globais().expect("fonts");
        let p = Paragrafo::rotulado(Estilo::Corpo, "Autor", "Ana Souza");
        let linhas = quebrar(&p, 500.0, 10.0, fontes);
        assert_eq!(linhas.len(), 1);
        assert_eq!(linhas[0].segmentos.len(), 2);
        assert_eq!(linhas[0].segmentos[0].peso, Peso::Negrito);
        assert_eq!(linhas[0].segmentos[0].texto, "Autor:");
        assert_eq!(linhas[0].segmentos[1].texto, "Ana Souza");
        assert!(linhas[0].segmentos[1].x > fontes.fonte(Peso::Negrito).largura("Autor:", 10.0));
    }

    #[test]
    fn vazio_da_uma_linha_vazia() {
        let fontes = Fontes::globais().expect("fonts");
        let p = Paragrafo {
            trechos: vec![Trecho {
                texto: String::new(),
                negrito: false,
            }],
            estilo: Estilo::Corpo,
            alinhamento: Default::default(),
        };
        let linhas = quebrar(&p, 100.0, 10.0, fontes);
        assert_eq!(linhas.len(), 1);
        assert!(linhas[0].segmentos.is_empty());
    }
}
