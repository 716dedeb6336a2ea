// Set the theme before first paint (a blocking script in <head>), so a dark-theme user never sees a white flash.
document.documentElement.dataset.theme =
  localStorage.getItem("cellblock.theme") || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
