// A small remote control for headless chromium, used by tests/browser.rs: one browser per test
// binary, one isolated context per page. Reads one JSON request per line on stdin, answers one
// JSON line per request on stdout: {"id":N,"ok":true,"value":...} or {"id":N,"ok":false,"error":"..."}.
// Requests are handled concurrently (tests run in parallel); it exits when stdin closes.
//
// Ops: open {page, url, width?, height?, init?}, eval {page, js}, wait {page, js, timeout},
//      fill {page, selector, value}, click {page, selector}, screenshot {page, path},
//      errors {page}, close {page}.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--ignore-certificate-errors", "--disable-gpu", "--disable-dev-shm-usage"],
});

const pages = new Map(); // name -> {context, page, errors}

async function open({ page: name, url, width = 1024, height = 768, init }) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width, height } });
  if (init) await context.addInitScript(init);
  const page = await context.newPage();
  const entry = { context, page, errors: [] };
  page.on("console", (m) => {
    if (m.type() === "error") entry.errors.push(m.text());
  });
  page.on("pageerror", (e) => entry.errors.push(`uncaught: ${e.message}`));
  pages.set(name, entry);
  await page.goto(url, { waitUntil: "load", timeout: 8000 });
  return page.url();
}

function get(name) {
  const entry = pages.get(name);
  if (!entry) throw new Error(`no page ${name}`);
  return entry;
}

const ops = {
  open,
  eval: async ({ page, js }) => get(page).page.evaluate(js),
  // Polls with evaluate (which the page's CSP allows) rather than waitForFunction (which
  // compiles the predicate in the page and so needs 'unsafe-eval'), through navigations.
  wait: async ({ page, js, timeout = 8000 }) => {
    const p = get(page).page;
    const deadline = Date.now() + timeout;
    for (;;) {
      let value = null;
      try {
        value = await p.evaluate(js);
      } catch (e) {
        // A navigation (the page moving itself) replaces the context: poll the new page.
        if (!/Execution context was destroyed|navigat/i.test(String(e && e.message))) throw e;
      }
      if (value) return value;
      if (Date.now() > deadline) throw new Error(`still false after ${timeout} ms`);
      await new Promise((r) => setTimeout(r, 25));
    }
  },
  fill: async ({ page, selector, value }) => get(page).page.fill(selector, value, { timeout: 5000 }),
  click: async ({ page, selector }) => get(page).page.click(selector, { timeout: 5000 }),
  screenshot: async ({ page, path }) => { await get(page).page.screenshot({ path, fullPage: true }); },
  errors: async ({ page }) => get(page).errors,
  close: async ({ page }) => {
    const entry = pages.get(page);
    pages.delete(page);
    if (entry) await entry.context.close();
  },
};

function reply(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

reply({ id: 0, ok: true, value: browser.version() });
const lines = createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  let request;
  try {
    request = JSON.parse(line);
    const value = await ops[request.op](request);
    reply({ id: request.id, ok: true, value: value === undefined ? null : value });
  } catch (e) {
    reply({ id: request ? request.id : -1, ok: false, error: String(e && e.message || e) });
  }
});
lines.on("close", async () => {
  await browser.close();
  process.exit(0);
});
