// A classic script in <head>, run before first paint: it sets the theme (so a dark-theme user never sees a white
// flash), and when the page has loaded without app.js having started (a bundle half built, a blocked script) it
// says so in words instead of leaving a dead page.
document.documentElement.dataset.theme =
  localStorage.getItem("cellblock.theme") || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
addEventListener("load", () => {
  if (window.cellblockStarted) return;
  const banner = document.getElementById("banner");
  banner.textContent =
    "The page's scripts did not load, so nothing here works yet. Rebuild the UI with `sudo scripts/setup --no-serve` " +
    "and reload.";
  banner.hidden = false;
});
