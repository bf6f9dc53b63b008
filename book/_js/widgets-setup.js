/* Loaded between require.js and @jupyter-widgets/html-manager's embed-amd.js on pages that show widgets.
 *
 * 1. The html-manager finds the icon fonts it ships from its own module URL, which require.js resolves relative to
 *    the page unless told otherwise: point that module at _static/html-manager/, where build.py put the fonts.
 * 2. The widgets typeset their labels through MathJax 2's API (MathJax.Hub.Queue) whenever MathJax is on the page;
 *    the book serves MathJax 3, so give it that one call, mapped onto MathJax 3's typesetPromise.
 */
(function () {
  var root = document.documentElement.dataset.content_root || "./";
  window.require.config({ paths: { "@jupyter-widgets/html-manager/dist": root + "_static/html-manager" } });
  window.addEventListener("load", function () {  /* registered before the html-manager's own load handler */
    var mathjax = window.MathJax;
    if (mathjax && !mathjax.Hub) {
      mathjax.Hub = {
        Queue: function (command) {
          var element = command && command[2];
          if (element && mathjax.typesetPromise) {
            mathjax.typesetPromise([element]).catch(function (error) { console.warn("MathJax:", error); });
          }
        },
      };
    }
  });
})();
