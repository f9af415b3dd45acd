// The console's only script, and optional: every page works without it. It shows the copy
// buttons (hidden until then) and copies their data-copy text to the clipboard.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button.copy[data-copy]")) {
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(button.dataset.copy);
        button.textContent = "copied";
        button.classList.add("done");
      } catch (err) {
        // No clipboard (an insecure origin, a refused permission): select the text instead.
        const range = document.createRange();
        range.selectNodeContents(button.previousElementSibling || button);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        button.textContent = "selected";
      }
    });
  }
});
