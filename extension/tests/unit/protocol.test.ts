/** The committed TypeScript protocol types are what the committed JSON Schema generates:
 * `scripts/gen-protocol` rewrites both. (tests/protocol/test_schema.py checks the schema
 * against the pydantic models.) */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';

import { renderProtocolTypes } from '../../scripts/gen-protocol-types';

const extension = path.join(__dirname, '..', '..');
const schema = path.join(extension, '..', 'protocol', 'schema');

test('src/protocol/ is what scripts/gen-protocol makes of protocol/schema/', async () => {
  const rendered = await renderProtocolTypes(schema);
  const scratch = mkdtempSync(path.join(tmpdir(), 'leeward-protocol-'));
  try {
    const stale: string[] = [];
    for (const [name, text] of Object.entries(rendered)) {
      writeFileSync(path.join(scratch, name), text);
      const committed = readFileSync(path.join(extension, 'src', 'protocol', name), 'utf8');
      if (committed !== readFileSync(path.join(scratch, name), 'utf8')) stale.push(name);
    }
    assert.deepEqual(
      stale,
      [],
      `extension/src/protocol/ is out of date (${stale.join(', ')}): run scripts/gen-protocol and commit the result`,
    );
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
});

test('every model once, every method typed', async () => {
  const { 'generated.ts': generated = '', 'methods.ts': methods = '' } =
    await renderProtocolTypes(schema);
  for (const model of ['Environment', 'Hardware', 'HealthRecord', 'DaemonCatalog']) {
    const declarations = generated.match(new RegExp(`^export (interface|type) ${model}\\b`, 'gm'));
    assert.equal(declarations?.length, 1, `${model} is declared once`);
  }
  assert.doesNotMatch(generated, /^export (interface|type) [A-Za-z]+\d+\b/m, 'no Hardware1 copies');
  const methodTable = JSON.parse(readFileSync(path.join(schema, 'methods.json'), 'utf8')) as {
    requests: Record<string, unknown>;
    notifications: Record<string, unknown>;
  };
  for (const method of [
    ...Object.keys(methodTable.requests),
    ...Object.keys(methodTable.notifications),
  ]) {
    assert.ok(methods.includes(`'${method}'`), `${method} has a constant`);
  }
  assert.match(
    methods,
    /EnvironmentsCreateRequest = new RequestType<p\.CreateParams, p\.Environment, void>/,
  );
});
