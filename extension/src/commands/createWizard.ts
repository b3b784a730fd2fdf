/** The create wizard's steps: kind, then flavor or profile, then region, then lifespan. Pure:
 * it asks through a `Prompter` (VS Code's quick picks in the extension, a script in tests). */
import type {
  CreateContainer,
  CreateDevserver,
  DaemonCatalog,
  EnvironmentKind,
  LifespanChoice,
  RegionChoice,
} from '../protocol/generated';
import { hardwareLabel, rttLabel } from '../common/format';

export interface Choice<T> {
  label: string;
  description?: string;
  detail?: string;
  value: T;
}

export interface Step {
  title: string;
  placeholder: string;
  step: number;
  totalSteps: number;
}

export interface Prompter {
  /** The picked value, or undefined when the user cancelled (Escape). */
  pick<T>(choices: Choice<T>[], step: Step): Promise<T | undefined>;
}

export type CreateRequest = CreateDevserver | CreateContainer;

const TITLE = 'Create Environment';
const STEPS = 4;

export function kindChoices(catalog: DaemonCatalog): Choice<EnvironmentKind>[] {
  const choices: Choice<EnvironmentKind>[] = [];
  if (catalog.flavors.length > 0) {
    choices.push({
      label: 'Devserver',
      description: 'long-lived, yours',
      detail:
        'A VM or machine of a size you choose, in a region you choose; temporary or permanent.',
      value: 'devserver',
    });
  }
  if (catalog.profiles.length > 0) {
    choices.push({
      label: 'Container',
      description: 'on demand, ready in seconds',
      detail: `Pre-warmed for a workflow, with the repository and tools in place; lives about ${catalog.lifespans.containerHours} hours.`,
      value: 'container',
    });
  }
  return choices;
}

export function flavorChoices(catalog: DaemonCatalog): Choice<string>[] {
  return catalog.flavors.map((flavor) => ({
    label: flavor.name,
    description: `${hardwareLabel(flavor.hardware)} · ${flavor.kind}`,
    ...(flavor.description ? { detail: flavor.description } : {}),
    value: flavor.name,
  }));
}

export function profileChoices(catalog: DaemonCatalog): Choice<string>[] {
  return catalog.profiles.map((profile) => {
    const detail = [profile.description, profile.tools.length ? profile.tools.join(', ') : '']
      .filter(Boolean)
      .join(' — ');
    return {
      label: profile.name,
      description: hardwareLabel(profile.hardware),
      ...(detail ? { detail } : {}),
      value: profile.name,
    };
  });
}

/** `12 ms · 8 CPU · 32 GiB free`; the default region first, then nearest first. */
export function regionChoices(catalog: DaemonCatalog): Choice<string>[] {
  const regions = [...catalog.regions];
  const first = regions.findIndex((r) => r.name === catalog.defaultRegion);
  if (first > 0) regions.unshift(...regions.splice(first, 1));
  return regions.map((region) => ({
    label: region.name,
    description: regionDescription(region),
    detail: regionDetail(region, region.name === catalog.defaultRegion),
    value: region.name,
  }));
}

function regionDescription(region: RegionChoice): string {
  return `${rttLabel(region.rttMs)} · ${hardwareLabel(region.free)} free`;
}

function regionDetail(region: RegionChoice, isDefault: boolean): string {
  const notes = [region.displayName];
  if (isDefault) notes.push('default');
  if (!region.accepting) notes.push('not accepting new environments now');
  notes.push(`largest free host: ${hardwareLabel(region.largestFree)}`);
  return notes.join(' · ');
}

export function lifespanChoices(
  catalog: DaemonCatalog,
  kind: EnvironmentKind,
): Choice<LifespanChoice>[] {
  return catalog.lifespanChoices
    .filter((choice) => choice.kind === kind)
    .map((choice) => ({
      label: choice.label,
      ...(choice.lifespan === 'permanent'
        ? { description: 'no expiry' }
        : choice.hours !== null
          ? { description: `expires ${choice.hours} hours after creation` }
          : {}),
      value: choice,
    }));
}

/** Runs the four steps; undefined when the user cancelled at any of them. The name is left
 * out: the fleet assigns one. */
export async function runCreateWizard(
  catalog: DaemonCatalog,
  prompter: Prompter,
): Promise<CreateRequest | undefined> {
  const step = (n: number, placeholder: string): Step => ({
    title: `${TITLE} (${n}/${STEPS})`,
    placeholder,
    step: n,
    totalSteps: STEPS,
  });
  const kind = await prompter.pick(kindChoices(catalog), step(1, 'What kind of environment?'));
  if (kind === undefined) return undefined;

  const what =
    kind === 'devserver'
      ? await prompter.pick(flavorChoices(catalog), step(2, 'Which size (flavor)?'))
      : await prompter.pick(profileChoices(catalog), step(2, 'Which workflow profile?'));
  if (what === undefined) return undefined;

  const region = await prompter.pick(
    regionChoices(catalog),
    step(3, 'Which region? (round trip from here · free capacity)'),
  );
  if (region === undefined) return undefined;

  const lifespan = await prompter.pick(lifespanChoices(catalog, kind), step(4, 'For how long?'));
  if (lifespan === undefined) return undefined;

  if (kind === 'devserver') {
    const request: CreateDevserver = {
      kind,
      flavor: what,
      region,
      lifespan: lifespan.lifespan,
    };
    if (lifespan.lifespan === 'temporary' && lifespan.hours !== null) {
      request.hours = lifespan.hours;
    }
    return request;
  }
  const request: CreateContainer = { kind, profile: what, region };
  if (lifespan.hours !== null) request.hours = lifespan.hours;
  return request;
}

/** `devserver small in north`, for the progress notification. */
export function describeRequest(request: CreateRequest): string {
  const what = request.kind === 'devserver' ? request.flavor : request.profile;
  return `${request.kind} ${what}${request.region ? ` in ${request.region}` : ''}`;
}
