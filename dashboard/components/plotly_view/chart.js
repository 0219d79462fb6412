// One plotly figure, drawn once by plotly.js (dashboard/plot.py says why it is not st.plotly_chart).
//
// data: {figure: JSON text of {data, layout}, config, src: the plotly.js bundle's URL, select: bool}.
// The bundle is a classic script, loaded once per page and shared by every chart on it (the browser keeps
// it and its compiled code). A box drawn on a chart with `select` goes back as the trigger "selection":
// {x: [from, to]} in the x axis's own units.
const loading = new Map();

function plotlyFrom(src) {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!loading.has(src)) {
    loading.set(src, new Promise((ok, fail) => {
      const s = document.createElement("script");
      s.src = src;
      s.onload = () => (window.Plotly ? ok(window.Plotly) : fail(new Error(`${src} did not define Plotly`)));
      s.onerror = () => { loading.delete(src); fail(new Error(`could not load ${src}`)); };
      document.head.appendChild(s);
    }));
  }
  return loading.get(src);
}

export default function (component) {
  const { parentElement, data, setTriggerValue } = component;
  let gd = parentElement.querySelector(".affectline-chart");
  if (!gd) {
    gd = document.createElement("div");
    gd.className = "affectline-chart";
    gd.style.width = "100%";
    parentElement.appendChild(gd);
  }
  const figure = JSON.parse(data.figure);
  const layout = Object.assign({}, figure.layout, { autosize: true });
  if (layout.height) gd.style.minHeight = `${layout.height}px`; // the page keeps its place while plotly loads
  gd.dataset.select = data.select ? "1" : "";
  let live = true;
  plotlyFrom(data.src)
    .then((Plotly) => {
      if (!live) return null;
      // react, not newPlot: a rerun with a new figure updates the chart in place (uirevision keeps zoom)
      return Plotly.react(gd, figure.data, layout, Object.assign({ responsive: true }, data.config));
    })
    .then(() => {
      if (!live || gd.dataset.bound) return;
      gd.dataset.bound = "1";
      gd.on("plotly_selected", (ev) => {
        if (gd.dataset.select && ev && ev.range && ev.range.x) setTriggerValue("selection", { x: ev.range.x });
      });
    })
    .catch((err) => {
      gd.textContent = `This chart could not be drawn (${err.message}). Reload the page to try again.`;
    });
  return () => { live = false; };
}
