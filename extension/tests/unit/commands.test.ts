import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { beforeEach, test } from 'node:test';

import * as vscode from 'vscode';

import { COMMANDS, registerCommands } from '../../src/commands';
import { INSTALL_REMOTE_SSH } from '../../src/commands/connect';
import { stagePercent } from '../../src/commands/create';
import { validateHours } from '../../src/commands/manage';
import { validateFleetUrl } from '../../src/commands/account';
import type { ConnectResult, Environment } from '../../src/protocol/generated';
import * as stub from '../support/vscode-stub';
import {
  CATALOG,
  commandContext,
  daemonStatus,
  environment,
  FakeDaemon,
} from '../support/fixtures';

const manifest = JSON.parse(
  readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'),
) as { contributes: { commands: { command: string }[] } };

beforeEach(() => stub.reset());

function connectResult(env: Environment): ConnectResult {
  return {
    environment: env,
    hostAlias: env.name,
    remoteAuthority: `ssh-remote+${env.name}`,
    remoteUri: `vscode-remote://ssh-remote+${env.name}/home/ada`,
    sshConfig: '/home/ada/.ssh/leeward/config',
    remoteHome: '/home/ada',
    certificateValidBefore: '2030-01-02T04:00:00Z',
    rttMs: 4.2,
  };
}

function setup(handlers: ConstructorParameters<typeof FakeDaemon>[0] = {}, alias?: string) {
  const daemon = new FakeDaemon(handlers);
  const ctx = commandContext(daemon, alias);
  const disposables = registerCommands(ctx);
  return { daemon, ctx, disposables };
}

test('every contributed command has a handler and every handler is contributed', () => {
  setup();
  const contributed = manifest.contributes.commands.map((c) => c.command).sort();
  assert.deepEqual(Object.keys(COMMANDS).sort(), contributed);
  assert.deepEqual(stub.commands.registered().sort(), contributed);
});

test('create: the wizard, then a progress notification with each stage, then an offer', async () => {
  const created = environment({ name: 'quiet-fox' });
  const { daemon, ctx } = setup({
    'leeward/catalog/get': () => CATALOG,
    'leeward/environments/create': () => created,
  });
  stub.answers.quickPick.push('Devserver', 'small', 'north', '8 hours');
  await vscode.commands.executeCommand('leeward.createEnvironment');
  assert.deepEqual(daemon.requests[0], { method: 'leeward/catalog/get', params: {} });
  assert.deepEqual(daemon.creates, [
    { kind: 'devserver', flavor: 'small', region: 'north', lifespan: 'temporary', hours: 8 },
  ]);
  const notification = stub.recorded.progress.find(
    (p) => p.options.location === stub.ProgressLocation.Notification,
  );
  assert.equal(notification?.options.title, 'Creating devserver small in north');
  assert.deepEqual(
    notification?.reports.map((r) => r.message),
    ['placing on north-h1', 'starting the agent', 'certifying', 'ready'],
  );
  assert.equal(
    notification?.reports.reduce((sum, r) => sum + (r.increment ?? 0), 0),
    100,
  );
  assert.equal(ctx.store.lastUsed, 'quiet-fox');
  assert.equal(ctx.store.find('quiet-fox')?.id, created.id);
  assert.match(stub.recorded.messages.at(-1)?.message ?? '', /quiet-fox is ready/);
});

test('create: Escape in the wizard creates nothing', async () => {
  const { daemon } = setup({ 'leeward/catalog/get': () => CATALOG });
  stub.answers.quickPick.push('Container', undefined);
  await vscode.commands.executeCommand('leeward.createEnvironment');
  assert.equal(daemon.creates.length, 0);
  assert.equal(stub.recorded.messages.length, 0);
});

test("a failure shows the daemon's sentence as is", async () => {
  setup({
    'leeward/catalog/get': () => {
      throw new Error('The fleet at http://127.0.0.1:8470 does not answer; is it running?');
    },
  });
  await vscode.commands.executeCommand('leeward.createEnvironment');
  const error = stub.recorded.messages.find((m) => m.severity === 'error');
  assert.equal(
    error?.message,
    'The fleet at http://127.0.0.1:8470 does not answer; is it running?',
  );
  assert.deepEqual(error?.items, ['Show Logs']);
});

test('connect with Remote-SSH opens a remote window on the URI the daemon gave', async () => {
  const box = environment();
  const { daemon, ctx } = setup({ 'leeward/environments/connect': () => connectResult(box) });
  stub.installExtension('ms-vscode-remote.remote-ssh');
  await vscode.commands.executeCommand('leeward.connect', box);
  assert.deepEqual(daemon.requests, [
    { method: 'leeward/environments/connect', params: { environment: 'box' } },
  ]);
  const open = stub.recorded.executed.find((e) => e.command === 'vscode.openFolder');
  assert.equal(String(open?.args[0]), 'vscode-remote://ssh-remote+box/home/ada');
  assert.equal(stub.recorded.terminals.length, 0);
  assert.equal(ctx.store.lastUsed, 'box');
});

test('connect without Remote-SSH: a terminal running ssh at once, and an offer to install', async () => {
  const box = environment();
  const { ctx } = setup({ 'leeward/environments/connect': () => connectResult(box) });
  stub.answers.message.push(INSTALL_REMOTE_SSH);
  await vscode.commands.executeCommand('leeward.connect', 'box');
  await stub.settle();
  assert.deepEqual(stub.recorded.terminals, [
    {
      name: 'Leeward: box',
      shellPath: 'ssh',
      shellArgs: ['-F', '/home/ada/.ssh/leeward/config', 'box'],
      iconPath: new stub.ThemeIcon('vm'),
      shown: true,
    },
  ]);
  const warning = stub.recorded.messages.find((m) => m.severity === 'warning');
  assert.match(warning?.message ?? '', /Remote-SSH is not installed/);
  assert.deepEqual(warning?.items, [INSTALL_REMOTE_SSH]);
  assert.ok(
    stub.recorded.executed.some(
      (e) =>
        e.command === 'workbench.extensions.installExtension' &&
        e.args[0] === 'ms-vscode-remote.remote-ssh',
    ),
  );
  assert.ok(ctx.logged.some((line) => line.includes('vscode-remote://ssh-remote+box/home/ada')));
});

test('connect from the palette picks among running environments, this window first', async () => {
  const alpha = environment({ name: 'alpha' });
  const bravo = environment({ name: 'bravo' });
  const failed = environment({ name: 'charlie', state: 'failed' });
  const { ctx, daemon } = setup(
    { 'leeward/environments/connect': () => connectResult(bravo) },
    'bravo',
  );
  stub.installExtension('ms-vscode-remote.remote-ssh');
  ctx.store.setList({
    environments: [alpha, bravo, failed],
    stale: false,
    fetchedAt: null,
    reason: '',
  });
  stub.answers.quickPick.push('bravo');
  await vscode.commands.executeCommand('leeward.connect');
  assert.deepEqual(
    stub.recorded.quickPicks[0]?.items.map((i) => i.label),
    ['bravo', 'alpha'],
  );
  assert.equal(
    stub.recorded.quickPicks[0]?.items[0]?.description,
    'devserver · north · running · expires in 8 h',
  );
  assert.deepEqual(daemon.requests[0]?.params, { environment: 'bravo' });
});

test("open terminal: ssh through the daemon, or a plain terminal in this environment's window", async () => {
  const box = environment();
  setup({ 'leeward/environments/connect': () => connectResult(box) });
  await vscode.commands.executeCommand('leeward.openTerminal', 'box');
  assert.equal(stub.recorded.terminals[0]?.shellPath, 'ssh');

  stub.reset();
  const { daemon } = setup({}, 'box');
  await vscode.commands.executeCommand('leeward.openTerminal', 'box');
  assert.equal(daemon.requests.length, 0);
  assert.deepEqual(stub.recorded.terminals, [{ name: 'Leeward: box', shown: true }]);
});

test('delete asks first (modal); no answer deletes nothing', async () => {
  const box = environment();
  const { daemon, ctx } = setup({
    'leeward/environments/delete': () => ({ ...box, state: 'deleting' }),
  });
  ctx.store.setList({ environments: [box], stale: false, fetchedAt: null, reason: '' });
  stub.answers.message.push(undefined);
  await vscode.commands.executeCommand('leeward.delete', box);
  assert.equal(daemon.requests.length, 0);
  const confirm = stub.recorded.messages[0];
  assert.equal(confirm?.message, 'Delete devserver box?');
  assert.equal(confirm?.options?.modal, true);

  stub.answers.message.push('Delete');
  await vscode.commands.executeCommand('leeward.delete', box);
  assert.deepEqual(daemon.requests, [
    { method: 'leeward/environments/delete', params: { environment: 'box' } },
  ]);
  assert.equal(ctx.store.find('box')?.state, 'deleting');
});

test('extend asks for hours and sends them as a number', async () => {
  const box = environment();
  const { daemon } = setup({
    'leeward/environments/extend': () => ({ ...box, expiresAt: '2030-01-02T20:00:00Z' }),
  });
  stub.answers.inputBox.push('24');
  await vscode.commands.executeCommand('leeward.extend', 'box');
  assert.deepEqual(daemon.requests, [
    { method: 'leeward/environments/extend', params: { environment: 'box', hours: 24 } },
  ]);
  assert.equal(validateHours('0'), 'A whole number of hours, 1 or more.');
  assert.equal(validateHours('1.5'), 'A whole number of hours, 1 or more.');
  assert.equal(validateHours('8'), undefined);
});

test('a permanent devserver is not extended', async () => {
  const forever = environment({ name: 'pet', lifespan: 'permanent', expiresAt: null });
  const { daemon, ctx } = setup();
  ctx.store.setList({ environments: [forever], stale: false, fetchedAt: null, reason: '' });
  await vscode.commands.executeCommand('leeward.extend', 'pet');
  assert.equal(daemon.requests.length, 0);
  assert.match(stub.recorded.messages[0]?.message ?? '', /permanent/);
});

test('sign in asks for the URL, then the token hidden, and sends both', async () => {
  const status = daemonStatus({ lastEventId: null });
  const { daemon, ctx } = setup({
    'leeward/account/signIn': () => status,
    'leeward/status/get': () => status,
    'leeward/environments/list': () => ({
      environments: [],
      stale: false,
      fetchedAt: null,
      reason: '',
    }),
    'leeward/health/list': () => ({ records: [] }),
  });
  stub.answers.inputBox.push('http://127.0.0.1:8470', ' s3cret ');
  await vscode.commands.executeCommand('leeward.signIn');
  assert.equal(stub.recorded.inputBoxes[1]?.password, true);
  assert.deepEqual(daemon.requests[0], {
    method: 'leeward/account/signIn',
    params: { fleetUrl: 'http://127.0.0.1:8470', token: 's3cret' },
  });
  assert.equal(ctx.store.signedIn, true);
  assert.equal(
    validateFleetUrl('fleet.example.com'),
    'The fleet URL, e.g. https://fleet.example.com or http://127.0.0.1:8470.',
  );
});

test('the details of an environment lead to its actions', async () => {
  const box = environment();
  setup({ 'leeward/environments/connect': () => connectResult(box) });
  stub.answers.quickPick.push('$(terminal) Open Terminal');
  await vscode.commands.executeCommand('leeward.showEnvironment', 'box');
  assert.ok(
    stub.recorded.executed.some((e) => e.command === 'leeward.openTerminal' && e.args[0] === 'box'),
  );
});

test('with no environment, the details offer to create one', async () => {
  const { ctx } = setup({ 'leeward/catalog/get': () => CATALOG });
  ctx.store.setAccount(daemonStatus({ fleet: 'signedOut', fleetUrl: null, user: null }));
  stub.answers.quickPick.push('$(add) Create Environment', undefined);
  await vscode.commands.executeCommand('leeward.showEnvironment');
  assert.deepEqual(
    stub.recorded.quickPicks[0]?.items.map((i) => i.label),
    ['$(sign-in) Sign In', '$(add) Create Environment', '$(output) Show Logs'],
  );
  assert.ok(stub.recorded.executed.some((e) => e.command === 'leeward.createEnvironment'));
});

test('show logs and restart reach the log and the daemon', async () => {
  const { ctx, daemon } = setup();
  await vscode.commands.executeCommand('leeward.showLogs');
  await vscode.commands.executeCommand('leeward.restartDaemon');
  assert.equal(ctx.shown, 1);
  assert.equal(daemon.restarts, 1);
});

test('the stage word of a progress message sets how far along it is', () => {
  assert.equal(stagePercent('placing on north-h1'), 25);
  assert.equal(stagePercent('certifying: host certificate'), 75);
  assert.equal(stagePercent('ready'), 100);
  assert.equal(stagePercent('waiting'), undefined);
});
