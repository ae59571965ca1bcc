// Drives Debian's chromium (headless, over the DevTools protocol with
// puppeteer-core) against bazaar's admin console, for
// tests/deploy/test_console.py.
//
//   node console.mjs URL SCREENSHOT SECONDS
//
// Loads URL, waits until the page says it is live, then reads the
// "requests since start" tile and the chart count every 500 ms for
// SECONDS (the test runs a load meanwhile), saves a full-page screenshot
// (desktop), its first screen (-top.png) and a phone-sized one (-phone.png), and prints one JSON object:
// {errors: [...], samples: [...], charts, routes, phoneOverflow, ...}.
import puppeteer from "puppeteer-core";

const [url, shot, seconds] = process.argv.slice(2);
const errors = [];
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check"],
});
try {
  const page = await browser.newPage();
  page.on("console", (m) => { if (m.type() === "error") errors.push("console: " + m.text()); });
  page.on("pageerror", (e) => errors.push("pageerror: " + e.message));
  page.on("requestfailed", (r) => errors.push("requestfailed: " + r.url() + " " + (r.failure() || {}).errorText));
  page.on("response", (r) => { if (r.status() >= 400) errors.push("HTTP " + r.status() + " " + r.url()); });
  await page.setViewport({ width: 1280, height: 900 });
  await page.goto(url, { waitUntil: "load", timeout: 20000 });
  await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("live"), { timeout: 20000 });
  const samples = [];
  const until = Date.now() + Number(seconds) * 1000;
  while (Date.now() < until) {
    samples.push(await page.evaluate(() => ({
      requests: document.getElementById("t-requests").textContent,
      rps: document.getElementById("t-rps").textContent,
      coroutines: document.getElementById("r-coros").textContent,
      statements: document.querySelectorAll("#stmts tbody tr").length,
    })));
    await new Promise((r) => setTimeout(r, 500));
  }
  const info = await page.evaluate(() => ({
    charts: document.querySelectorAll(".uplot canvas").length,
    routes: [...document.querySelectorAll("#routes-table tbody tr td:first-child")].map((td) => td.textContent),
    statements: [...document.querySelectorAll("#stmts tbody tr td:first-child")].map((td) => td.textContent),
    errorsShown: document.querySelectorAll("#errors tbody tr").length,
    config: document.getElementById("config").textContent,
    dbReach: document.getElementById("d-reach").textContent,
    status: document.getElementById("status").textContent,
  }));
  await page.screenshot({ path: shot, fullPage: true });
  await page.screenshot({ path: shot.replace(/\.png$/, "-top.png") }); // the first screen (docs/console.png)
  // A phone: nothing may stick out sideways.
  await page.setViewport({ width: 390, height: 844, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  await new Promise((r) => setTimeout(r, 1500));
  const phoneOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await page.screenshot({ path: shot.replace(/\.png$/, "-phone.png"), fullPage: false });
  console.log(JSON.stringify({ errors, samples, phoneOverflow, ...info }));
} finally {
  await browser.close();
}
