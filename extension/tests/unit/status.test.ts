import assert from 'node:assert/strict';
import { test } from 'node:test';

import { aliasFromAuthority, shownEnvironment, windowAlias } from '../../src/common/remote';
import { statusView, type StatusInput } from '../../src/common/status';
import { daemonStatus, environment, health, NOW } from '../support/fixtures';

const box = environment();
const signedIn = daemonStatus();
const input = (overrides: Partial<StatusInput>): StatusInput => ({
  daemon: 'running',
  account: signedIn,
  environment: box,
  health: health(box),
  now: NOW,
  ...overrides,
});

test('a healthy environment: name, state, RTT; a click shows its details', () => {
  const view = statusView(input({}));
  assert.equal(view.text, '$(vm) box · healthy · 12 ms');
  assert.equal(view.background, undefined);
  assert.deepEqual(view.command, { command: 'leeward.showEnvironment', arguments: ['box'] });
  assert.match(view.tooltip, /Region: north/);
  assert.match(view.tooltip, /Host: north\\-h1/);
});

test('reconnecting spins, degraded warns, unreachable is an error, each with the reason', () => {
  const reconnecting = statusView(
    input({
      health: health(box, { state: 'reconnecting', rttMs: null, reason: 'Probe timed out' }),
    }),
  );
  assert.equal(reconnecting.text, '$(sync~spin) box · reconnecting');
  assert.match(reconnecting.tooltip, /Reason: Probe timed out/);

  const connecting = statusView(
    input({ health: health(box, { state: 'connecting', rttMs: null }) }),
  );
  assert.ok(connecting.text.startsWith('$(sync~spin) '));

  const degraded = statusView(input({ health: health(box, { state: 'degraded', rttMs: 812 }) }));
  assert.equal(degraded.text, '$(vm) box · degraded · 812 ms');
  assert.equal(degraded.background, 'warning');

  const unreachable = statusView(input({ health: health(box, { state: 'unreachable' }) }));
  assert.equal(unreachable.background, 'error');
});

test('before any health record, the fleet state shows; provisioning spins', () => {
  assert.equal(statusView(input({ health: undefined })).text, '$(vm) box · running');
  const making = environment({ state: 'provisioning' });
  assert.equal(
    statusView(input({ environment: making, health: undefined })).text,
    '$(sync~spin) box · provisioning',
  );
});

test('no environment: "Leeward", and a click offers to create one', () => {
  const view = statusView(input({ environment: undefined, health: undefined }));
  assert.equal(view.text, '$(vm) Leeward');
  assert.deepEqual(view.command, { command: 'leeward.showEnvironment', arguments: [] });
});

test('signed in, the fleet link still starting: connecting spins, not "signed out"', () => {
  const connecting = daemonStatus({ fleet: 'connecting', user: null, reason: 'Connecting.' });
  const view = statusView(
    input({ account: connecting, environment: undefined, health: undefined }),
  );
  assert.equal(view.text, '$(sync~spin) Leeward');
  assert.equal(view.tooltip, 'Connecting to the fleet at http://127\\.0\\.0\\.1:8470…');
  assert.equal(view.background, undefined);
});

test('the daemon starting spins; failed is red and opens the logs', () => {
  assert.equal(statusView(input({ daemon: 'starting' })).text, '$(sync~spin) Leeward');
  const failed = statusView(input({ daemon: 'failed', daemonReason: 'No leeward executable.' }));
  assert.equal(failed.background, 'error');
  assert.equal(failed.command.command, 'leeward.showLogs');
  assert.match(failed.tooltip, /No leeward executable/);
});

test('the remote authority names the alias, plain or in Remote-SSH hex JSON form', () => {
  assert.equal(aliasFromAuthority('ssh-remote+box'), 'box');
  const hex = Buffer.from(JSON.stringify({ hostName: 'box.north.leeward.test' })).toString('hex');
  assert.equal(aliasFromAuthority(`ssh-remote+${hex}`), 'box.north.leeward.test');
  assert.equal(aliasFromAuthority('wsl+Ubuntu'), undefined);
  assert.equal(windowAlias('ssh-remote', ['ssh-remote+box']), 'box');
  assert.equal(windowAlias(undefined, ['ssh-remote+box']), undefined);
});

test("the environment shown: this window's, else the last used, else the one shown before, else the first running", () => {
  const a = environment({ name: 'alpha', state: 'provisioning' });
  const b = environment({ name: 'bravo' });
  const c = environment({ name: 'charlie' });
  const all = [a, b, c];
  assert.equal(shownEnvironment(all, 'charlie', 'alpha')?.name, 'charlie');
  assert.equal(shownEnvironment(all, 'charlie.north.leeward.test', undefined)?.name, 'charlie');
  assert.equal(shownEnvironment(all, 'elsewhere', 'alpha')?.name, 'alpha');
  assert.equal(shownEnvironment(all, undefined, 'gone')?.name, 'bravo');
  assert.equal(shownEnvironment([], undefined, undefined), undefined);
  // shown before, it stays shown while it migrates (no other running one takes its place,
  // nor "no environment" when it was the only one)
  const moving = environment({ id: 'e-c', name: 'charlie', state: 'migrating' });
  assert.equal(shownEnvironment([b, moving], undefined, undefined, 'e-c')?.name, 'charlie');
  assert.equal(shownEnvironment([moving], undefined, undefined, 'e-c')?.name, 'charlie');
  assert.equal(shownEnvironment([moving], undefined, undefined), undefined);
  assert.equal(shownEnvironment([b, moving], undefined, undefined, 'e-gone')?.name, 'bravo');
});

test('a relay resume spins; DNS down but reached around it says "DNS bypass"; migrating counts', () => {
  const resuming = statusView(
    input({
      health: health(box, {
        state: 'reconnecting',
        rttMs: null,
        sessions: 1,
        reason: 'Resuming its SSH session through the relay.',
      }),
    }),
  );
  assert.equal(resuming.text, '$(sync~spin) box · reconnecting');
  assert.match(resuming.tooltip, /Resuming its SSH session/);

  const bypass = statusView(
    input({
      health: health(box, { state: 'degraded', dnsBypass: true, route: 'api', sessions: 1 }),
    }),
  );
  assert.equal(bypass.text, '$(vm) box · DNS bypass · 12 ms');
  assert.equal(bypass.background, 'warning');

  const moving = environment({ state: 'migrating', migratingFrom: 'north-h1', host: 'north-h2' });
  const view = statusView(
    input({ environment: moving, health: health(moving, { state: 'degraded' }) }),
  );
  assert.equal(view.text, '$(vm) box · degraded · 12 ms');
});
