//! The chamber (`base_casalegislativa`) as every A4 report's frame: name, logo,
//! rodapé and the date printed in the footer.

use std::path::{Component, Path};

use chrono::NaiveDate;
use tokio_postgres::Client;

use crate::layout::model::Moldura;
use crate::text::data_curta;
use crate::{RenderError, RenderOptions};

/// The first chamber row (by id) plus today's date in the chamber's zone.
#[derive(Debug, Clone, Default)]
pub struct Casa {
    pub nome: String,
    pub logotipo: String,
    pub endereco: String,
    pub cep: String,
    pub municipio: String,
    pub uf: String,
    pub telefone: String,
    pub endereco_web: String,
    pub email: String,
    pub hoje: NaiveDate,
}

/// Loads the chamber row; a database without one gives an empty frame rather
/// than a failure (the report's own data is still worth printing).
pub async fn carregar(db: &Client, opts: &RenderOptions) -> Result<Casa, RenderError> {
    let linha = db
        .query_one(
            "SELECT c.nome, c.logotipo, c.endereco, c.cep, c.municipio, c.uf, c.telefone,
                    c.endereco_web, c.email, (now() AT TIME ZONE $1)::date
               FROM (SELECT 1) AS um
               LEFT JOIN LATERAL (SELECT * FROM base_casalegislativa ORDER BY id LIMIT 1) c
                 ON true",
            &[&opts.time_zone],
        )
        .await?;
    let texto = |i: usize| -> Result<String, RenderError> {
        Ok(linha.try_get::<_, Option<String>>(i)?.unwrap_or_default())
    };
    Ok(Casa {
        nome: texto(0)?,
        logotipo: texto(1)?,
        endereco: texto(2)?,
        cep: texto(3)?,
        municipio: texto(4)?,
        uf: texto(5)?,
        telefone: texto(6)?,
        endereco_web: texto(7)?,
        email: texto(8)?,
        hoje: opts.today.unwrap_or(linha.try_get(9)?),
    })
}

impl Casa {
    /// SAPL's rodapé: address, CEP (only for an 8-character CEP, which SAPL
    /// prints without its fifth character), município/UF and phone; then site
    /// and e-mail; then today's date, joined by spaces as its HTML reports do.
    pub fn rodape(&self) -> String {
        let cep: String = if self.cep.chars().count() == 8 {
            let inicio: String = self.cep.chars().take(4).collect();
            let fim: String = self.cep.chars().skip(5).collect();
            format!("{inicio}-{fim}")
        } else {
            String::new()
        };

        let mut linha1 = self.endereco.clone();
        if !cep.is_empty() {
            if !self.endereco.is_empty() {
                linha1.push_str(" - ");
            }
            linha1.push_str("CEP ");
            linha1.push_str(&cep);
        }
        if !self.municipio.is_empty() {
            linha1.push_str(&format!(" - {} {}", self.municipio, self.uf));
        }
        if !self.telefone.is_empty() {
            linha1.push_str(&format!(" Tel.: {}", self.telefone));
        }

        let mut linha2 = self.endereco_web.clone();
        if !self.email.is_empty() {
            if !self.endereco_web.is_empty() {
                linha2.push_str(" - ");
            }
            linha2.push_str("E-mail: ");
            linha2.push_str(&self.email);
        }

        [linha1, linha2, data_curta(self.hoje)]
            .into_iter()
            .filter(|parte| !parte.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The A4 frame for this chamber; reads the logo file when there is one.
    pub async fn moldura(&self, opts: &RenderOptions, cabecalho_extra: Option<String>) -> Moldura {
        Moldura {
            casa: self.nome.clone(),
            subtitulo: "Sistema de Apoio ao Processo Legislativo".to_string(),
            logotipo: self.ler_logotipo(opts).await,
            cabecalho_extra,
            rodape: self.rodape(),
            data: data_curta(self.hoje),
        }
    }

    async fn ler_logotipo(&self, opts: &RenderOptions) -> Option<Vec<u8>> {
        let raiz = opts.media_root.as_ref()?;
        let relativo = Path::new(&self.logotipo);
        // The column is a path under MEDIA_ROOT; never follow one that leaves it.
        let seguro = !self.logotipo.is_empty()
            && relativo
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !seguro {
            return None;
        }
        // Limitation: a missing or unreadable logo silently leaves the header without one.
        tokio::fs::read(raiz.join(relativo)).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn casa() -> Casa {
        Casa {
            nome: "Câmara".into(),
            endereco: "Praça da Matriz, 100".into(),
            cep: "70000-000".into(),
            municipio: "Exemplópolis".into(),
            uf: "DF".into(),
            telefone: "(61) 3333-0000".into(),
            endereco_web: "http://camara.exemplo.leg.br".into(),
            email: "contato@exemplo.leg.br".into(),
            hoje: NaiveDate::from_ymd_opt(2026, 12, 3).expect("date"),
            ..Default::default()
        }
    }

    #[test]
    fn rodape_como_o_sapl() {
        assert_eq!(
            casa().rodape(),
            "Praça da Matriz, 100 - Exemplópolis DF Tel.: (61) 3333-0000 \
             http://camara.exemplo.leg.br - E-mail: contato@exemplo.leg.br 03/12/2026"
        );
    }

    #[test]
    fn cep_de_oito_caracteres_perde_o_quinto() {
        let mut c = casa();
        c.cep = "70000000".into();
        c.telefone.clear();
        c.endereco_web.clear();
        assert_eq!(
            c.rodape(),
            "Praça da Matriz, 100 - CEP 7000-000 - Exemplópolis DF E-mail: contato@exemplo.leg.br 03/12/2026"
        );
    }
}
