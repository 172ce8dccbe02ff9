// The demo brand page (brand-idp demo only). It plays LiveEngage's part: it calls the JS
// methods brand-idp's /liveengage.js defines, has the demo server redeem codes and verify
// id_tokens as LiveEngage's back end does, and shows what LiveEngage would receive.
(function () {
  "use strict";
  function $(id) { return document.getElementById(id); }
  function show(id, value) {
    $(id).textContent = value === undefined || value === null || value === "" ? "" :
      typeof value === "string" ? value : JSON.stringify(value, null, 2);
  }
  function outcome(text, ok) {
    show("outcome", text);
    $("outcome").className = ok === undefined ? "" : ok ? "ok" : "bad";
  }
  function reset(text) {
    outcome(text);
    ["callback", "header", "claims", "lp-sdes"].forEach(function (id) { show(id, ""); });
  }
  function post(path, body) {
    return fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (r) { return r.json(); });
  }
  function report(result) {
    show("header", result.header);
    show("claims", result.claims);
    show("lp-sdes", result.claims ? result.claims.lp_sdes || "(none)" : "");
    if (result.verified) outcome("Verified: " + result.checks.join("; ") + ".", true);
    else outcome("Not verified: " + result.error, false);
  }
  function failed(e) { outcome("The demo server did not answer: " + e, false); }

  // LiveEngage makes the PKCE verifier and passes the challenge to the JS method.
  function b64url(bytes) {
    var s = "";
    for (var i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function pkce() {
    var verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
    if (!crypto.subtle) return Promise.resolve({});
    return crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)).then(function (d) {
      return { verifier: verifier, challenge: b64url(new Uint8Array(d)) };
    });
  }

  // Back from brand-idp's login, the address carries a code and state this page has no use for.
  if (location.search) history.replaceState(null, "", location.pathname);

  window.lpTag.identities[0](function (identity) {
    if (identity) {
      show("identity", "Logged in to brand-idp. lpTag.identities reports " + JSON.stringify(identity) + ".");
    } else {
      show("identity", "Not logged in to brand-idp: the JS methods will call back with login_required.");
    }
    $("login").hidden = !!identity;
    $("login-note").hidden = !!identity;
    $("logout").hidden = !identity;
  });

  $("implicit").addEventListener("click", function () {
    reset("Calling lpGetAuthenticationToken(callback)…");
    window.lpGetAuthenticationToken(function (token, reason) {
      show("callback", Array.prototype.slice.call(arguments));
      if (!token) { outcome("No token: the method called back with \"" + reason + "\".", false); return; }
      outcome("Verifying the id_token…");
      post("/inspect", { token: token }).then(report, failed);
    });
  });

  $("code").addEventListener("click", function () {
    reset("Calling lpGetAuthenticationCode(callback, code_challenge)…");
    pkce().then(function (p) {
      window.lpGetAuthenticationCode(function (result, reason) {
        show("callback", Array.prototype.slice.call(arguments));
        if (!result) { outcome("No code: the method called back with \"" + reason + "\".", false); return; }
        outcome("Redeeming the code at the token endpoint…");
        post("/redeem", { code: result.ssoKey, redirect_uri: result.redirect_uri, code_verifier: p.verifier })
          .then(report, failed);
      }, p.challenge);
    });
  });
})();
