// The client side of SAPL's panel WebSocket (feat/painel-websockets), as its pages behave:
// one socket to /ws/painel/<sessao_id>/ on the page's own host, every message a full
// {"type": "data", "payload": {...}} that replaces what is on screen (there are no deltas),
// an application ping now and then, and reconnection with backoff and a
// "conexão perdida" banner while the socket is down.
//
// The page's state is in <body data-estado="...">: iniciando, aguardando (socket open, no
// data yet), conectado (data shown), perdida (retrying), recusado (a close code after
// which retrying cannot help). Tests wait on it; a person reads #estado.
(function () {
  "use strict";

  var FIRST_RETRY_MS = 1000;
  var MAX_RETRY_MS = 30000;
  var JITTER = 0.3;
  // Well inside the server's own ping and pong timeouts; the answer is ignored.
  var PING_MS = 20000;

  // Closes that name the viewer's problem: retrying would only be refused again.
  var REFUSED = {
    4401: "Você precisa entrar no SAPL para ver o painel.",
    4403: "Seu usuário não tem permissão para ver o painel.",
    4404: "Sessão plenária não encontrada."
  };
  // Service restart (1012) and a socket dropped for falling behind (1013): the server asks
  // the viewer to come back, so a socket that was showing data retries at once.
  var RETRY_AT_ONCE = { 1012: true, 1013: true };

  var sessaoId = new URLSearchParams(window.location.search).get("sessao");
  var retryMs = FIRST_RETRY_MS;

  function el(id) {
    return document.getElementById(id);
  }

  // textContent, never innerHTML: names and ementas come from the chamber's users.
  function show(id, value) {
    el(id).textContent = value === null || value === undefined ? "" : String(value);
  }

  function setEstado(estado, text) {
    document.body.setAttribute("data-estado", estado);
    show("estado", text);
    var banner = el("conexao-perdida");
    banner.hidden = estado !== "perdida";
    if (estado === "perdida") {
      banner.textContent = "Conexão perdida com o servidor. " + text;
    }
  }

  function render(d) {
    show("sessao-plenaria", d.sessao_plenaria);
    show("sessao-data", [d.sessao_plenaria_data, d.sessao_plenaria_hora_inicio]
      .filter(Boolean).join(" - "));
    show("msg-painel", d.msg_painel);
    show("materia-texto", d.materia_legislativa_texto);
    show("materia-ementa", d.materia_legislativa_ementa);
    show("observacao-materia", d.observacao_materia);
    show("tipo-votacao", d.tipo_votacao ? "Votação " + d.tipo_votacao : "");
    show("tipo-resultado", d.tipo_resultado);

    // The counts exist only while a matéria is open or was voted last.
    var comVotacao = d.numero_votos_sim !== undefined;
    el("votacao").hidden = !comVotacao;
    if (comVotacao) {
      show("votos-sim", d.numero_votos_sim);
      show("votos-nao", d.numero_votos_nao);
      show("votos-abstencoes", d.numero_abstencoes);
      show("votos-total", d.total_votos);
    }

    // SAPL already writes "Voto Informado" in `voto` when mostrar_voto is off.
    var rows = (d.presentes || []).map(function (p) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-parlamentar", p.parlamentar_id);
      [p.nome, p.partido, p.voto].forEach(function (text) {
        var td = document.createElement("td");
        td.textContent = text || "";
        tr.appendChild(td);
      });
      return tr;
    });
    el("presentes").replaceChildren.apply(el("presentes"), rows);
    show("num-presentes", d.num_presentes);
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + window.location.host + "/ws/painel/" + sessaoId + "/");
    var gotData = false;
    var pinger = null;

    socket.onopen = function () {
      // The server checks the session only after the upgrade: not "conectado" yet.
      if (document.body.getAttribute("data-estado") !== "perdida") {
        setEstado("aguardando", "Aguardando os dados da sessão…");
      }
      pinger = setInterval(function () {
        socket.send(JSON.stringify({ type: "ping" }));
      }, PING_MS);
    };

    socket.onmessage = function (event) {
      var message;
      try {
        message = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (message.type === "data" && message.payload) {
        gotData = true;
        retryMs = FIRST_RETRY_MS;
        render(message.payload);
        setEstado("conectado", "Conectado, atualizado às " +
          new Date().toLocaleTimeString("pt-BR"));
      } else if (message.type === "error") {
        show("estado", "Erro do servidor: " + message.message);
      }
    };

    socket.onclose = function (event) {
      clearInterval(pinger);
      if (REFUSED[event.code]) {
        setEstado("recusado", REFUSED[event.code]);
        return;
      }
      if (gotData && RETRY_AT_ONCE[event.code]) {
        connect();
        return;
      }
      var wait = retryMs * (1 + JITTER * (2 * Math.random() - 1));
      retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
      setEstado("perdida", "Tentando de novo em " + Math.max(1, Math.round(wait / 1000)) + " s.");
      setTimeout(connect, wait);
    };
  }

  if (!/^[0-9]+$/.test(sessaoId || "")) {
    setEstado("recusado", "Endereço sem ?sessao=<número da sessão plenária>.");
    return;
  }
  connect();
})();
