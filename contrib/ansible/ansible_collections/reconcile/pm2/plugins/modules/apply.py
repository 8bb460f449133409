#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) the reconcile maintainers
# SPDX-License-Identifier: MIT OR Apache-2.0

from __future__ import annotations

DOCUMENTATION = r'''
---
module: apply
short_description: Apply a reconcile project (PM2 ecosystem files) to a host's PM2 daemon
version_added: "0.1.0"
description:
  - Runs C(reconcile plan), then C(reconcile apply) on the target host, so that the
    PM2 processes of the namespaces the project owns match its ecosystem files.
    Only those processes are ever touched; every other PM2 process on the host is
    listed as ignored and left alone.
  - The apply carries out exactly the plan it just made (C(reconcile apply PLAN_FILE)),
    and refuses if the desired state or the owned processes moved in between.
    With O(restart) it runs C(reconcile apply --restart NAME ...), which plans again
    itself.
  - Everything C(reconcile apply) promises holds here too; the blast-radius guard,
    one apply at a time per PM2 home, a journal, a port preflight, a health gate that
    stops crash loops, and a check afterwards that no other process moved.
  - In check mode it only runs C(reconcile plan), reports C(changed) when the plan has
    changes, and acts on nothing. A plan over the blast-radius guard fails the task
    in check mode too (unless O(allow_blast_radius)), as the real run would.
  - With C(--diff) each changed app is shown with its attributes before and after.
    Secret env values (keys matching the project's C([secrets] patterns)) are already
    hidden by C(reconcile) and never reach Ansible.
  - A refusal (lint errors, a live name conflict, the blast-radius guard, another
    apply running, a stale plan, a taken port) or a failed apply (a call failed, an
    app did not stay healthy, verification found a difference) fails the task with
    C(reconcile)'s own message.
author:
  - reconcile maintainers (!UNKNOWN)
requirements:
  - C(reconcile) on the target host (on E(PATH) or named by O(binary)).
  - C(node) and the C(pm2) package on the target host, as C(reconcile apply) needs
    them (C(npm install -g pm2), or E(RECONCILE_PM2) set to its C(node_modules/pm2)
    directory, for example with the task's C(environment) keyword).
options:
  project_dir:
    description:
      - The project directory on the target, holding C(reconcile.toml) and the
        ecosystem files (C(reconcile -C DIR)).
    type: path
    required: true
  binary:
    description:
      - The C(reconcile) executable. A bare name is looked up on E(PATH); a path is
        used as it is.
    type: path
    default: reconcile
  config:
    description:
      - The project file, if not C(reconcile.toml) in O(project_dir) (C(--config)).
    type: path
  env:
    description:
      - Which C(env_<name>) block of the ecosystem files to merge (C(--env)); default
        C([project] env) of C(reconcile.toml).
    type: str
  pm2_home:
    description:
      - The PM2 home of the daemon (sets E(PM2_HOME) for C(reconcile)). C([pm2] home)
        in C(reconcile.toml) takes precedence; without either, C(~/.pm2) of the
        remote user.
    type: path
  restart:
    description:
      - Apps to roll out although nothing in their spec changed (C(apply --restart
        NAME), once per app) under the same safety contract; a restart for a fork
        app, a reload one instance at a time for a cluster app. Each must be a desired
        app live in an owned namespace.
      - A task with O(restart) always reports C(changed), in check mode too.
      - Needs a C(reconcile) whose C(apply) has C(--restart).
    type: list
    elements: str
    default: []
  allow_blast_radius:
    description:
      - Apply even if the plan exceeds the blast-radius guard (C([safety] max_deletes),
        C(max_changed_fraction)); C(--allow-blast-radius).
    type: bool
    default: false
  rollback:
    description:
      - If the apply fails, restore the apps it changed to the spec they ran before
        (C(--rollback)). The task fails either way.
    type: bool
    default: false
attributes:
  check_mode:
    description: Runs C(reconcile plan) only; C(changed) says whether the plan has changes.
    support: full
  diff_mode:
    description: Shows each changed app's attributes before and after, secrets hidden.
    support: full
  platform:
    description: Hosts where PM2 runs.
    support: full
    platforms: posix
notes:
  - Idempotent; a second run with the same files plans no change and reports
    C(changed=false), without running C(reconcile apply) at all.
  - For a fleet, run it with C(serial) so a failed host stops the rollout (see the
    collection's README).
seealso:
  - module: reconcile.pm2.plan
'''

EXAMPLES = r'''
- name: Deploy the shop's PM2 apps
  reconcile.pm2.apply:
    project_dir: /srv/shop/deploy
    env: production

- name: Deploy with a reconcile built elsewhere, and roll out new code of the api
  reconcile.pm2.apply:
    project_dir: /srv/shop/deploy
    binary: /usr/local/bin/reconcile
    restart:
      - api
  environment:
    RECONCILE_PM2: /usr/lib/node_modules/pm2

- name: A deliberate big change (more than [safety] allows), rolled back if unhealthy
  reconcile.pm2.apply:
    project_dir: /srv/shop/deploy
    allow_blast_radius: true
    rollback: true
'''

RETURN = r'''
plan:
  description:
    - The plan, as C(reconcile plan --format json) prints it (format version 1) with
      C(changes) (each with C(name), C(namespace), C(action), C(attributes) before and
      after, C(reason), C(pm_ids)), C(ignored), C(unmanaged), C(summary) (counts per
      action), C(guard) and C(basis). Secret values are already hidden.
  returned: always
  type: dict
  sample:
    version: 1
    project: shop
    namespaces: [shop]
    changes:
      - name: api
        namespace: shop
        action: update
        attributes:
          - path: env.GREETING
            before: hi
            after: hello
            forces_replacement: false
        reason: attributes_changed
        pm_ids: [3]
    summary: {create: 0, update: 1, replace: 0, scale: 0, delete: 0, noop: 1}
apply:
  description:
    - The report of C(reconcile apply --format json) with C(outcome), C(actions) (app,
      call, pm_id, duration, error), C(healthy), C(failures), C(rolled_back),
      C(problems) and C(journal) (where the journal is).
    - Empty when nothing was applied (check mode, or the plan had no changes).
  returned: always
  type: dict
  sample:
    outcome: success
    actions:
      - {app: api, namespace: shop, action: update, call: restart, pm_id: 3, duration_ms: 21, error: null}
    healthy: 1
    failures: []
    rolled_back: []
    problems: []
    journal: ./.reconcile/journal.jsonl
cmd:
  description: The last C(reconcile) command run.
  returned: always
  type: list
  elements: str
rc:
  description: The exit code of the C(reconcile) command that failed.
  returned: failure
  type: int
stderr:
  description: Its standard error (progress lines and warnings).
  returned: always
  type: str
'''

import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.reconcile.pm2.plugins.module_utils.reconcile import (
    COMMON_ARGS,
    message,
    parse_json,
    plan,
    plan_diff,
    run,
)


def main():
    argument_spec = dict(COMMON_ARGS)
    argument_spec.update(
        restart=dict(type='list', elements='str', default=[]),
        allow_blast_radius=dict(type='bool', default=False),
        rollback=dict(type='bool', default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    restart = module.params['restart']

    plan_file = os.path.join(module.tmpdir, 'plan.json')
    plan_json, has_changes, fields = plan(module, ['--out', plan_file])
    result = dict(changed=has_changes or bool(restart), plan=plan_json, apply={}, **fields)
    if module._diff:
        result['diff'] = plan_diff(plan_json)

    violations = (plan_json.get('guard') or {}).get('violations') or []
    if module.check_mode and violations and not module.params['allow_blast_radius']:
        # What the real run would do: refuse before the first action.
        module.fail_json(
            msg='reconcile apply would refuse this plan (the blast-radius guard): %s; '
                'check the plan, and set allow_blast_radius if it is really meant' % '; '.join(violations),
            **result)
    if module.check_mode or not result['changed']:
        module.exit_json(**result)

    extra = ['--auto-approve']
    if module.params['allow_blast_radius']:
        extra.append('--allow-blast-radius')
    if module.params['rollback']:
        extra.append('--rollback')
    if restart:
        # `--restart` plans again itself (it cannot take a plan file).
        for name in restart:
            extra += ['--restart', name]
    else:
        extra.append(plan_file)
    rc, out, err, argv = run(module, 'apply', extra)
    result.update(cmd=argv, stderr=err)
    if rc != 0:
        result['rc'] = rc
        # Refused (nothing printed on stdout) or failed (the report says what ran).
        try:
            result['apply'] = json.loads(out) if out.strip() else {}
        except ValueError:
            result['stdout'] = out
        result['changed'] = bool(result['apply'].get('actions'))
        module.fail_json(msg=message(out, err, 'reconcile apply'), **result)
    result['apply'] = parse_json(module, out, 'reconcile apply', **result)
    result['changed'] = result['apply'].get('outcome') != 'noop' or bool(result['apply'].get('actions'))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
