// Passkeys: the only script of the sign-in pages. A form with data-webauthn="get" or
// "create" carries its options as JSON; on submit this calls the browser's WebAuthn
// API and posts the credential (base64url fields, as the server expects) instead.
(function () {
  "use strict";
  function toBytes(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) { b64 += "="; }
    var raw = atob(b64), out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { out[i] = raw.charCodeAt(i); }
    return out.buffer;
  }
  function toText(buffer) {
    var bytes = new Uint8Array(buffer), raw = "";
    for (var i = 0; i < bytes.length; i++) { raw += String.fromCharCode(bytes[i]); }
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function publicKey(options, mode) {
    options.challenge = toBytes(options.challenge);
    if (mode === "create") {
      options.user.id = toBytes(options.user.id);
      (options.excludeCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
    } else {
      (options.allowCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
    }
    return options;
  }
  function serialize(cred, mode) {
    var r = cred.response, response = { clientDataJSON: toText(r.clientDataJSON) };
    if (mode === "create") {
      response.attestationObject = toText(r.attestationObject);
      if (r.getTransports) { response.transports = r.getTransports(); }
    } else {
      response.authenticatorData = toText(r.authenticatorData);
      response.signature = toText(r.signature);
      if (r.userHandle) { response.userHandle = toText(r.userHandle); }
    }
    return JSON.stringify({
      id: cred.id, rawId: toText(cred.rawId), type: cred.type, response: response,
      clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      authenticatorAttachment: cred.authenticatorAttachment || undefined
    });
  }
  document.querySelectorAll("form[data-webauthn]").forEach(function (form) {
    var mode = form.getAttribute("data-webauthn");
    var status = form.querySelector(".webauthn-status");
    if (!window.PublicKeyCredential) {
      if (status) { status.textContent = "This browser does not support passkeys."; }
      return;
    }
    form.addEventListener("submit", function (event) {
      var field = form.querySelector("input[name=credential]");
      if (field.value) { return; }
      event.preventDefault();
      var options = publicKey(JSON.parse(form.querySelector(".webauthn-options").textContent), mode);
      var call = mode === "create"
        ? navigator.credentials.create({ publicKey: options })
        : navigator.credentials.get({ publicKey: options });
      call.then(function (cred) {
        field.value = serialize(cred, mode);
        form.submit();
      }, function (err) {
        if (status) { status.textContent = "The passkey was not used: " + err.message; }
      });
    });
  });
})();
