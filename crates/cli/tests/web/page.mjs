// Loads the seed's fleet page in headless Chromium and watches its DOM until
// every host is live (or the time runs out). Prints one JSON object: the
// per-datacenter progress it saw over time, the final state, and how many
// events the page rendered; writes a screenshot. Driven by web_page.rs.
//
// usage: node page.mjs URL SCREENSHOT.png TIMEOUT_MS
import { chromium } from "playwright-core";

const [url, shot, timeoutArg] = process.argv.slice(2);
const timeout = Number(timeoutArg || 60000);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const out = { samples: [], final: null, updates: 0, errors: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (e) => out.errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") out.errors.push(m.text()); });
  await page.goto(url);
  const start = Date.now();
  const read = () => page.evaluate(() => ({
    updates: Number(document.body.dataset.updates),
    allLive: document.body.dataset.allLive === "true",
    release: document.body.dataset.release,
    dcs: [...document.querySelectorAll("#dcs .dc")].map((d) => ({
      dc: d.dataset.dc,
      fraction: Number(d.dataset.fraction),
      verified: Number(d.dataset.verified),
      live: Number(d.dataset.live),
      hosts: Number(d.dataset.hosts),
      bar: Number(d.querySelector("progress").value),
    })),
    hosts: [...document.querySelectorAll("#hosts .host")].map((h) => ({ host: h.dataset.host, state: h.dataset.state })),
    connection: document.getElementById("connection").dataset.state,
    summary: document.getElementById("summary").textContent,
  }));
  for (;;) {
    const s = await read();
    out.samples.push({ t: Date.now() - start, updates: s.updates, dcs: s.dcs });
    if (s.allLive || Date.now() - start > timeout) {
      out.final = s;
      break;
    }
    await page.waitForTimeout(100);
  }
  // Let the chart catch up (the page reloads it every 2 s), then the picture.
  await page.waitForTimeout(2200);
  out.final.chart = await page.evaluate(() => {
    const img = document.getElementById("chart");
    return { complete: img.complete, width: img.naturalWidth, src: img.getAttribute("src") };
  });
  await page.screenshot({ path: shot, fullPage: true });
  out.updates = out.final.updates;
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
