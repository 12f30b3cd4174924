// Selects a read-only link field's text when it gets focus, ready to copy (was an inline onfocus,
// which the Content-Security-Policy does not allow).
(function () {
  "use strict";
  document.querySelectorAll("input.copy, textarea.copy").forEach(function (field) {
    field.addEventListener("focus", function () { field.select(); });
  });
})();
