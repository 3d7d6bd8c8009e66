//! The chamber logo: drawn in the header of every page when
//! `base_casalegislativa.logotipo` names a file under the media root, left out
//! when the file is missing.

mod common;

use common::{opcoes, pk, Leitor, TestDb};
use sapl_renderer::{render, RenderOptions, ReportKind, ReportRequest};

/// CRC-32 (PNG chunks).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A `lado` × `lado` RGB PNG, stored (uncompressed) deflate blocks.
fn png(lado: u32) -> Vec<u8> {
    let mut cru = Vec::new();
    for y in 0..lado {
        cru.push(0); // filter: none
        for x in 0..lado {
            cru.extend([(x * 255 / lado) as u8, (y * 255 / lado) as u8, 120]);
        }
    }
    let mut zlib = vec![0x78, 0x01];
    let blocos: Vec<&[u8]> = cru.chunks(65_535).collect();
    for (i, bloco) in blocos.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocos.len()));
        let n = bloco.len() as u16;
        zlib.extend(n.to_le_bytes());
        zlib.extend((!n).to_le_bytes());
        zlib.extend(*bloco);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &cru {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend(((b << 16) | a).to_be_bytes());

    let mut saida = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |tipo: &[u8], dados: &[u8]| {
        saida.extend((dados.len() as u32).to_be_bytes());
        let mut corpo = tipo.to_vec();
        corpo.extend(dados);
        saida.extend(&corpo);
        saida.extend(crc32(&corpo).to_be_bytes());
    };
    let mut ihdr = lado.to_be_bytes().to_vec();
    ihdr.extend(lado.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &zlib);
    chunk(b"IEND", &[]);
    saida
}

fn imagens(pdf: &[u8]) -> usize {
    let dir = std::env::temp_dir().join(format!("sapl-r4-img-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let arquivo = dir.join("r.pdf");
    std::fs::write(&arquivo, pdf).expect("write");
    let saida = std::process::Command::new("pdfimages")
        .arg("-list")
        .arg(&arquivo)
        .output()
        .expect("pdfimages (poppler-utils)");
    let _ = std::fs::remove_dir_all(&dir);
    // Two header lines, then one line per image placement.
    String::from_utf8_lossy(&saida.stdout)
        .lines()
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .count()
}

#[tokio::test]
async fn logotipo_aparece_quando_o_arquivo_existe() {
    let db = TestDb::new().await;
    db.exec("UPDATE base_casalegislativa SET logotipo = 'sapl/public/casa/logotipo/brasao.png'")
        .await;
    let media = std::env::temp_dir().join(format!("sapl-r4-media-{}", std::process::id()));
    let pasta = media.join("sapl/public/casa/logotipo");
    std::fs::create_dir_all(&pasta).expect("media dir");
    std::fs::write(pasta.join("brasao.png"), png(48)).expect("logo");

    let req = ReportRequest {
        kind: ReportKind::MateriaTramitacao,
        id: pk(1),
        reader: Leitor::Anonymous,
    };
    let com_logo = RenderOptions {
        media_root: Some(media.clone()),
        ..opcoes()
    };
    let pdf = render(&db.client, &req, &com_logo).await.expect("render");
    assert_eq!(imagens(&pdf), 1, "logo drawn once on the one page");

    // Several pages: the logo is on each.
    let sessao = ReportRequest {
        kind: ReportKind::SessaoPlenaria,
        ..req
    };
    let pdf = render(&db.client, &sessao, &com_logo)
        .await
        .expect("render");
    assert_eq!(imagens(&pdf), common::paginas(&pdf));

    // The file missing, or no media root: no logo, no failure.
    std::fs::remove_file(pasta.join("brasao.png")).expect("rm");
    let pdf = render(&db.client, &req, &com_logo).await.expect("render");
    assert_eq!(imagens(&pdf), 0);
    let pdf = render(&db.client, &req, &opcoes()).await.expect("render");
    assert_eq!(imagens(&pdf), 0);
    let _ = std::fs::remove_dir_all(&media);
}
