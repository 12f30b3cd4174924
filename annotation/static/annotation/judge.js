// Keyboard-first judging. 1 = response A (left), 2 = response B (right), 0 = tie,
// Q W E … = strength (weakest first), Enter = submit (Ctrl+Enter from the reason box, Esc leaves it).
// The page works without this file; it only adds keys, card clicks and a double-submit guard.
(function () {
  "use strict";
  var STRENGTH_KEYS = "qwertyuio";

  function judgeForm() { return document.getElementById("judge-form"); }

  function isTyping(el) {
    if (!el || !el.tagName) return false;
    if (el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT") return true;
    return el.tagName === "INPUT" && !/^(radio|checkbox|button|submit|hidden)$/.test(el.type);
  }

  function pick(form, name, value) {
    var input = form.querySelector('input[name="' + name + '"][value="' + value + '"]');
    if (!input || input.disabled) return false;
    input.checked = true;
    input.dispatchEvent(new Event("change", { bubbles: true }));
    return true;
  }

  // A tie has no strength; a and b need one. Keep the inputs and the card highlight in step.
  function sync(form) {
    if (!form) return;
    var checked = form.querySelector('input[name="choice"]:checked');
    var tie = !!checked && checked.value === "tie";
    form.querySelectorAll('input[name="strength"]').forEach(function (input) {
      input.disabled = tie;
      input.required = !!checked && !tie;
      if (tie) input.checked = false;
    });
    form.querySelectorAll(".response[data-choice]").forEach(function (card) {
      card.classList.toggle("selected", !!checked && card.dataset.choice === checked.value);
    });
  }

  function submit(form) {
    if (form.requestSubmit) form.requestSubmit();
    else form.submit();
  }

  document.addEventListener("keydown", function (e) {
    var form = judgeForm();
    if (!form || e.altKey || e.isComposing) return;
    var target = e.target;
    if (isTyping(target)) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(form); }
      else if (e.key === "Escape") { target.blur(); }
      return;
    }
    if (e.ctrlKey || e.metaKey) return;
    var key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    var handled = false;
    if (key === "1") handled = pick(form, "choice", "a");
    else if (key === "2") handled = pick(form, "choice", "b");
    else if (key === "0") handled = pick(form, "choice", "tie");
    else if (key.length === 1 && STRENGTH_KEYS.indexOf(key) >= 0) handled = pick(form, "strength", STRENGTH_KEYS.indexOf(key) + 1);
    else if (key === "Enter") {
      if (target && (target.tagName === "BUTTON" || target.tagName === "A")) return; // the browser activates it
      submit(form);
      handled = true;
    }
    if (handled) e.preventDefault();
  });

  document.addEventListener("change", function (e) {
    var form = judgeForm();
    if (form && form.contains(e.target)) sync(form);
  });

  // Clicking a response card picks it (unless the participant is selecting its text).
  document.addEventListener("click", function (e) {
    var card = e.target.closest && e.target.closest(".response[data-choice]");
    var form = judgeForm();
    if (!card || !form || String(window.getSelection ? window.getSelection() : "")) return;
    pick(form, "choice", card.dataset.choice);
  });

  // Without htmx the form posts normally: guard against a double click sending it twice
  // (the server would store one judgment anyway). With htmx, hx-sync and hx-disabled-elt do this.
  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (form.id !== "judge-form" || window.htmx) return;
    if (form.dataset.submitting) { e.preventDefault(); return; }
    form.dataset.submitting = "1";
    form.querySelectorAll('button[type="submit"]').forEach(function (b) { b.disabled = true; });
  });

  // Validation errors (422), a stale comparison (404) and a malformed one (400) come back as the
  // pair fragment with messages: swap them in like a success.
  document.addEventListener("htmx:beforeSwap", function (e) {
    var status = e.detail.xhr.status;
    if (status === 400 || status === 404 || status === 422) { e.detail.shouldSwap = true; e.detail.isError = false; }
  });

  document.addEventListener("htmx:afterSwap", function () {
    var pair = document.getElementById("pair");
    if (pair) pair.focus({ preventScroll: true });
    sync(judgeForm());
    if (pair && pair.dataset.title) document.title = pair.dataset.title;
  });

  document.addEventListener("DOMContentLoaded", function () { sync(judgeForm()); });
})();
