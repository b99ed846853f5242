// The CommonJS build: `require` gets the same API as `import`.
const assert = require("node:assert/strict");
const { test } = require("node:test");

test("require() loads the CommonJS build with the whole API", async () => {
  const cjs = require("../dist/cjs/index.js");
  const esm = await import("../dist/esm/index.js");
  assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort());
  assert.equal(typeof cjs.ProxyBootstrap, "function");
  assert.equal(cjs.backoffDelayMs(1, 1000, 8000, () => 0), 500);
});

test("the package's exports map resolves both formats", async () => {
  const { name } = require("../package.json");
  assert.equal(require.resolve(name), require.resolve("../dist/cjs/index.js"));
  assert.equal(typeof (await import(name)).ProxyBootstrap, "function");
});
