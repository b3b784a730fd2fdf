import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  regionChoices,
  runCreateWizard,
  type Choice,
  type Prompter,
  type Step,
} from '../../src/commands/createWizard';
import { CATALOG } from '../support/fixtures';

/** Answers each step by label (undefined: Escape) and records what it was offered. */
function script(...labels: (string | undefined)[]): Prompter & {
  steps: { step: Step; labels: string[]; descriptions: (string | undefined)[] }[];
} {
  const steps: { step: Step; labels: string[]; descriptions: (string | undefined)[] }[] = [];
  return {
    steps,
    pick<T>(choices: Choice<T>[], step: Step): Promise<T | undefined> {
      steps.push({
        step,
        labels: choices.map((c) => c.label),
        descriptions: choices.map((c) => c.description),
      });
      const label = labels.shift();
      if (label === undefined) return Promise.resolve(undefined);
      const choice = choices.find((c) => c.label === label);
      assert.ok(choice, `no choice ${label} in ${choices.map((c) => c.label).join(', ')}`);
      return Promise.resolve(choice.value);
    },
  };
}

test('a devserver: kind, flavor, region, lifespan, in that order', async () => {
  const prompter = script('Devserver', 'small', 'north', '8 hours');
  const request = await runCreateWizard(CATALOG, prompter);
  assert.deepEqual(request, {
    kind: 'devserver',
    flavor: 'small',
    region: 'north',
    lifespan: 'temporary',
    hours: 8,
  });
  assert.deepEqual(
    prompter.steps.map((s) => s.labels),
    [
      ['Devserver', 'Container'],
      ['small', 'gpu'],
      ['south', 'north', 'west'],
      ['8 hours', '1 week', 'Permanent'],
    ],
  );
  assert.deepEqual(
    prompter.steps.map((s) => s.step.title),
    [1, 2, 3, 4].map((n) => `Create Environment (${n}/4)`),
  );
});

test('a permanent devserver has no hours', async () => {
  const request = await runCreateWizard(CATALOG, script('Devserver', 'gpu', 'south', 'Permanent'));
  assert.deepEqual(request, {
    kind: 'devserver',
    flavor: 'gpu',
    region: 'south',
    lifespan: 'permanent',
  });
});

test('a container: profile, region, its lifespan choices only', async () => {
  const prompter = script('Container', 'web', 'south', '36 hours');
  const request = await runCreateWizard(CATALOG, prompter);
  assert.deepEqual(request, { kind: 'container', profile: 'web', region: 'south', hours: 36 });
  assert.deepEqual(prompter.steps[1]?.labels, ['web']);
  assert.deepEqual(prompter.steps[3]?.labels, ['36 hours']);
});

test('Escape at any step cancels', async () => {
  for (let answered = 0; answered < 4; answered++) {
    const labels = ['Devserver', 'small', 'north', '8 hours'].slice(0, answered);
    const prompter = script(...labels, undefined);
    assert.equal(await runCreateWizard(CATALOG, prompter), undefined);
    assert.equal(prompter.steps.length, answered + 1);
  }
});

test('regions: the default first, then nearest first, with RTT and free capacity', () => {
  const choices = regionChoices(CATALOG);
  assert.deepEqual(
    choices.map((c) => [c.label, c.description]),
    [
      ['south', '42 ms · 16 CPU · 64 GiB · 1 GPU free'],
      ['north', '3 ms · 8 CPU · 32 GiB free'],
      ['west', 'no answer · 0 CPU · 0 GiB free'],
    ],
  );
  assert.match(choices[0]?.detail ?? '', /default/);
  assert.match(choices[2]?.detail ?? '', /not accepting/);
  const nearest = regionChoices({ ...CATALOG, defaultRegion: null });
  assert.deepEqual(
    nearest.map((c) => c.label),
    ['north', 'south', 'west'],
  );
});
