/*
 * brand-idp for LiveEngage (LivePerson Conversational Cloud): the embedded window's
 * authentication method, and the lpTag.identities function.
 *
 * Include it on the brand's pages with one tag (`brand-idp liveengage settings` prints it):
 *   <script src="https://login.brand.example/liveengage.js" data-client-id="liveengage"
 *           data-flow="code" data-method="lpGetAuthenticationToken" data-context="window" async></script>
 *
 * The method always calls back: with the id_token (implicit), with {ssoKey, redirect_uri}
 * (code flow), or with ("", reason) when nobody is logged in or anything fails.
 */
(function () {
  "use strict";
  var ISSUER = "__BRAND_IDP_ISSUER__".replace(/\/$/, "");
  var TIMEOUT_MS = 10000;
  var script = document.currentScript;
  var data = (script && script.dataset) || {};
  var clientId = data.clientId || "";
  // Without data-flow, the client's configured flow applies.
  var flow = data.flow === "implicit" || data.flow === "code" ? data.flow : "";
  var methodName = data.method || "lpGetAuthenticationToken";
  var contextPath = data.context || "window";
  var redirectUri = data.redirectUri || "";

  function context(path) {
    var obj = window;
    var parts = path.split(".");
    for (var i = 0; i < parts.length; i++) {
      if (i === 0 && parts[i] === "window") continue;
      if (obj[parts[i]] === undefined || obj[parts[i]] === null) obj[parts[i]] = {};
      obj = obj[parts[i]];
    }
    return obj;
  }

  function request(path, options) {
    var controller = typeof AbortController === "function" ? new AbortController() : null;
    var timer = setTimeout(function () { if (controller) controller.abort(); }, TIMEOUT_MS);
    options.credentials = "include";
    if (controller) options.signal = controller.signal;
    return fetch(ISSUER + path, options).then(function (res) {
      clearTimeout(timer);
      return res.json().catch(function () { return {}; }).then(function (body) {
        return { ok: res.ok, status: res.status, body: body || {} };
      });
    }, function (err) {
      clearTimeout(timer);
      throw err;
    });
  }

  function getAuthentication(callback, codeChallenge) {
    if (typeof callback !== "function") return;
    var done = false;
    function finish(value, reason) {
      if (done) return;
      done = true;
      try {
        if (reason === undefined) callback(value); else callback(value, reason);
      } catch (e) { /* the caller's callback threw: nothing more to do */ }
    }
    if (!clientId) {
      finish("", "brand-idp: the script tag has no data-client-id");
      return;
    }
    var guard = setTimeout(function () { finish("", "timeout"); }, TIMEOUT_MS + 1000);
    var payload = { client_id: clientId };
    if (flow) payload.flow = flow;
    if (codeChallenge) payload.code_challenge = String(codeChallenge);
    if (redirectUri) payload.redirect_uri = redirectUri;
    request("/liveengage/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(payload)
    }).then(function (r) {
      clearTimeout(guard);
      if (!r.ok) {
        finish("", r.body.error || "http_" + r.status);
      } else if (r.body.id_token) {
        finish(r.body.id_token);
      } else if (r.body.code) {
        finish({ ssoKey: r.body.code, redirect_uri: r.body.redirect_uri });
      } else {
        finish("", "no_token");
      }
    }, function () {
      clearTimeout(guard);
      finish("", "network_error");
    });
  }

  context(contextPath)[methodName] = getAuthentication;

  window.lpTag = window.lpTag || {};
  window.lpTag.identities = window.lpTag.identities || [];
  // One identity function per page, however many times the script is included.
  if (window.__brandIdpIdentity) return;
  window.__brandIdpIdentity = true;
  window.lpTag.identities.push(function (callback) {
    request("/liveengage/identity?client_id=" + encodeURIComponent(clientId), { method: "GET" }).then(function (r) {
      var b = r.body;
      callback(r.ok && b.sub ? { iss: b.iss, acr: b.acr, sub: b.sub } : null);
    }, function () {
      callback(null);
    });
  });
})();
