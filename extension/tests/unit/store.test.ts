import assert from 'node:assert/strict';
import { test } from 'node:test';

import { EnvironmentStore } from '../../src/common/environments';
import { contextValue, environmentDescription, iconId } from '../../src/views/environmentsTree';
import { environment, health, MemoryMemento, NOW } from '../support/fixtures';

test('the store shows live environments by name and drops the health of gone ones', async () => {
  const store = new EnvironmentStore(new MemoryMemento());
  let changes = 0;
  store.onDidChange(() => changes++);
  const zed = environment({ name: 'zed' });
  const amy = environment({ name: 'amy' });
  const gone = environment({ name: 'gone', state: 'deleted' });
  const warm = environment({ name: 'pool', state: 'warm' });
  const moving = environment({ name: 'moving', state: 'migrating' });
  const idle = environment({ name: 'idle', state: 'stopped' });
  store.setList({
    environments: [zed, gone, amy, warm, moving, idle],
    stale: false,
    fetchedAt: null,
    reason: '',
  });
  assert.deepEqual(
    store.environments.map((e) => e.name),
    ['amy', 'idle', 'moving', 'zed'],
  );
  store.setHealth(health(zed));
  assert.equal(store.healthOf(zed)?.state, 'healthy');
  store.setList({ environments: [amy], stale: false, fetchedAt: null, reason: '' });
  assert.equal(store.healthOf(zed), undefined);
  store.upsert({ ...amy, state: 'deleting' });
  assert.equal(store.find('amy.north.leeward.test')?.state, 'deleting');
  await store.rememberLastUsed('amy');
  assert.equal(store.lastUsed, 'amy');
  assert.equal(changes, 5);
});

test('tree items: kind · region · state · expiry, and the inline actions that apply', () => {
  const box = environment();
  assert.equal(environmentDescription(box, NOW), 'devserver · north · running · expires in 8 h');
  assert.equal(
    contextValue(box),
    'environment devserver connect terminal extend delete backUpNow move',
  );
  const pet = environment({ lifespan: 'permanent', expiresAt: null });
  assert.equal(environmentDescription(pet, NOW), 'devserver · north · running · permanent');
  const lost = { ...health(box), state: 'unreachable' as const };
  assert.equal(
    environmentDescription(box, NOW, lost),
    'devserver · north · unreachable · expires in 8 h',
  );
  assert.equal(
    environmentDescription(box, NOW, { ...lost, state: 'healthy' }),
    'devserver · north · running · expires in 8 h',
  );
  assert.equal(contextValue(pet), 'environment devserver connect terminal delete backUpNow move');
  const making = environment({ state: 'provisioning' });
  assert.equal(contextValue(making), 'environment devserver delete');
  const web = environment({ kind: 'container', flavor: null, profile: 'web' });
  assert.equal(contextValue(web), 'environment container connect terminal extend delete');
  assert.equal(iconId(making, undefined), 'loading~spin');
  assert.equal(iconId(box, health(box, { state: 'reconnecting' })), 'sync~spin');
  assert.equal(iconId(box, health(box, { state: 'degraded' })), 'warning');
});
