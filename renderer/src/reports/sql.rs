//! SQL fragments reproducing SAPL's Python `__str__` rules, shared by the
//! reports so each rule is written once.

/// `str(Autor)` for a `base_autor` row aliased `a`: the related object's name
/// when `content_type`/`object_id` point at one (parlamentar, comissão, órgão,
/// frente, bloco, bancada), else `nome` plus " - cargo" when there is a cargo,
/// else "?".
pub const AUTOR_STR: &str = "COALESCE(
    (SELECT CASE ct.model
        WHEN 'parlamentar' THEN (SELECT x.nome_parlamentar FROM parlamentares_parlamentar x WHERE x.id = a.object_id)
        WHEN 'comissao' THEN (SELECT x.sigla || ' - ' || x.nome FROM comissoes_comissao x WHERE x.id = a.object_id)
        WHEN 'orgao' THEN (SELECT x.nome || ' - ' || x.sigla FROM materia_orgao x WHERE x.id = a.object_id)
        WHEN 'frente' THEN (SELECT x.nome FROM parlamentares_frente x WHERE x.id = a.object_id)
        WHEN 'bloco' THEN (SELECT x.nome FROM parlamentares_bloco x WHERE x.id = a.object_id)
        WHEN 'bancada' THEN (SELECT x.nome FROM sessao_bancada x WHERE x.id = a.object_id)
     END FROM django_content_type ct WHERE ct.id = a.content_type_id AND a.object_id IS NOT NULL),
    NULLIF(a.nome, '') || CASE WHEN a.cargo <> '' THEN ' - ' || a.cargo ELSE '' END,
    '?')";

/// `str(UnidadeTramitacao)` for the unit whose id is `{id}`: the non-null of
/// comissão ("sigla - nome"), órgão ("nome - sigla") and parlamentar joined by
/// " - ", in that order. Empty when `{id}` is null.
pub fn unidade_str(id: &str) -> String {
    format!(
        "COALESCE((SELECT concat_ws(' - ',
            (SELECT c.sigla || ' - ' || c.nome FROM comissoes_comissao c WHERE c.id = u.comissao_id),
            (SELECT o.nome || ' - ' || o.sigla FROM materia_orgao o WHERE o.id = u.orgao_id),
            (SELECT p.nome_parlamentar FROM parlamentares_parlamentar p WHERE p.id = u.parlamentar_id))
          FROM materia_unidadetramitacao u WHERE u.id = {id}), '')"
    )
}

/// The chamber row as text, for fingerprints.
pub const CASA_TEXTO: &str = "(SELECT c::text FROM base_casalegislativa c ORDER BY c.id LIMIT 1)";
