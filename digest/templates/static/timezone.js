// Pick the reader's own timezone from the browser; without scripts the select still works.
(function () {
  var select = document.getElementById("timezone");
  if (!select || select.getAttribute("data-browser-timezone") !== "yes") return;
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  for (var i = 0; i < select.options.length; i++) {
    if (select.options[i].value === zone) { select.selectedIndex = i; return; }
  }
})();
