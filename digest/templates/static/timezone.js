// Pick the reader's own timezone from the browser; without scripts the select still works.
// A zone that is not on the page's short list is added to it, so the reader keeps their own.
(function () {
  var select = document.getElementById("timezone");
  if (!select || select.getAttribute("data-browser-timezone") !== "yes") return;
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (!zone) return;
  for (var i = 0; i < select.options.length; i++) {
    if (select.options[i].value === zone) { select.selectedIndex = i; return; }
  }
  select.insertBefore(new Option(zone.replace(/_/g, " "), zone, true, true), select.firstChild);
})();
