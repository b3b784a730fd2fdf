// Preloaded by `npm test` (node --require): `require('vscode')` gets tests/support/vscode-stub.ts,
// the small part of the VS Code API that the extension's modules use, recording what they do.
const Module = require('node:module');
const path = require('node:path');

const stub = path.join(__dirname, 'vscode-stub.ts');
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  if (request === 'vscode') return stub;
  return resolve.call(this, request, ...rest);
};
