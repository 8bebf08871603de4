/* Live admin pages: a process page, the process list and the counts refresh by themselves, without a reload.
 *
 * No library. The page's elements say what to do, so any template can take part (how often: processes/live.py).
 *
 * A watched page: an element with data-live="fast|slow|off", data-live-seconds (between two checks),
 * data-live-url and data-live-etag. Every data-live-seconds it GETs the URL with If-None-Match: the tag.
 * 304: nothing changed. Another tag: the page is out of date and reloads (the list offers a reload link instead
 * while rows are selected or a field has the focus, not to lose them). "off" checks nothing (a finished, failed
 * or suspended process: only a person's action changes it, from a page that then shows the outcome). An element
 * inside it with data-live-note says how the checks go.
 *
 * Counts, updated in place (GET the status counts and the engine's settings; the URLs are on the script tag):
 *   data-live-count="KEY"             its text becomes the number. KEY: a status ("failed"), "all", statuses
 *                                     joined by commas (their sum: "waiting,awaiting_callback"), or
 *                                     "engine.running_processes" (the processes a run holds now)
 *   data-live-template="failed: {n}"  ... its text becomes this instead (data-live-template-one: for exactly 1)
 *   data-live-grouped                 ... with the digits grouped as the page's language does ("1,002")
 *   data-live-hide-zero="KEY"         hidden while that count is 0
 *   data-live-attention="KEY"         has the classes "attention" and KEY while that count is above 0 (or those
 *                                     of data-live-attention-classes="attention attention-failed")
 * They are checked every data-counts-seconds while some process is unfinished, else every
 * data-counts-idle-seconds (0: not then).
 *
 * data-live-elapsed="12.3" (seconds, when the server rendered the page): its text ticks every second ("42 s").
 *
 * Every check pauses while the tab is hidden and runs as soon as it is shown again; after an error it waits
 * twice as long each time (at most 5 minutes); a logout or a process that is gone stops it, saying so.
 */
(function () {
  "use strict";

  const script = document.currentScript;
  const config = script ? script.dataset : {};
  const MAX_BACKOFF_SECONDS = 300;

  // As workflows.dsl.human_duration: "45 s", "10 min", "2 h 5 min", "3 d 4 h".
  function humanDuration(seconds) {
    const whole = Math.max(Math.floor(seconds), 0);
    const parts = [[Math.floor(whole / 86400), "d"], [Math.floor((whole % 86400) / 3600), "h"],
      [Math.floor((whole % 3600) / 60), "min"], [whole % 60, "s"]];
    const shown = parts.filter((part) => part[0]).slice(0, 2).map((part) => part[0] + " " + part[1]);
    return shown.join(" ") || "0 s";
  }

  function every(seconds) {
    return seconds < 60 ? seconds + " s" : humanDuration(seconds);
  }

  class Stop extends Error {}  // no point in checking again: said once, then the loop ends

  function get(url, etag) {
    const headers = { Accept: "application/json" };
    if (etag) headers["If-None-Match"] = etag;
    // no-store: our If-None-Match reaches the server, and its 304 reaches us (not the browser cache's copy).
    return fetch(url, { headers: headers, credentials: "same-origin", cache: "no-store" }).then(
      (response) => {
        if (response.status === 401 || response.status === 403 || response.redirected) {
          throw new Stop("live updates stopped: you are no longer logged in; reload the page to log in again");
        }
        if (response.status === 404) throw new Stop("live updates stopped: the process no longer exists");
        if (response.status !== 304 && !response.ok) throw new Error("the server answered " + response.status);
        return response;
      },
      () => { throw new Error("the server did not answer"); },
    );
  }

  /* Runs check() now and then: check resolves to the seconds until the next one, or null to stop. */
  function loop(firstSeconds, check, report) {
    let failures = 0;
    let hiddenSince = false;
    let stopped = false;

    function schedule(seconds) {
      window.setTimeout(run, seconds * 1000);
    }

    function run() {
      if (stopped) return;
      if (document.visibilityState === "hidden") {
        hiddenSince = true;
        report("paused while this tab is hidden", false);
        return;
      }
      check().then((next) => {
        failures = 0;
        if (next === null) stopped = true;
        else schedule(next);
      }, (error) => {
        if (error instanceof Stop) {
          stopped = true;
          report(error.message, true);
          return;
        }
        failures += 1;
        const delay = Math.min(firstSeconds * 2 ** failures, MAX_BACKOFF_SECONDS);
        report("could not check for changes (" + error.message + "); trying again in " + every(delay), true);
        schedule(delay);
      });
    }

    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && hiddenSince && !stopped) {
        hiddenSince = false;
        run();
      }
    });
    schedule(firstSeconds);
  }

  function noteOf(root) {
    const note = root.querySelector("[data-live-note]");
    return (text, problem, reloadLink) => {
      if (!note) return;
      const shown = text.charAt(0).toUpperCase() + text.slice(1) + (reloadLink ? " " : "");
      // Only a change: the note is a polite live region, and a screen reader would repeat it every check.
      if (note.textContent === shown && !reloadLink) return;
      note.textContent = shown;
      if (reloadLink) {
        const link = document.createElement("a");
        link.href = window.location.href;
        link.textContent = "Reload";
        link.className = "live-reload";
        note.appendChild(link);
      }
      note.classList.toggle("live-problem", Boolean(problem));
      note.hidden = false;
    };
  }

  // Someone choosing rows or typing: a reload would lose it.
  function busy() {
    const active = document.activeElement;
    if (active && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName) && active.type !== "submit") return true;
    return Boolean(document.querySelector("input.action-select:checked"));
  }

  function watch(root) {
    const mode = root.dataset.live;
    const seconds = parseFloat(root.dataset.liveSeconds);
    const url = root.dataset.liveUrl;
    const etag = root.dataset.liveEtag;
    if (mode === "off" || !(seconds > 0) || !url) return;
    const note = noteOf(root);
    const normal = "live: checked for changes every " + every(seconds) + (mode === "slow" ? " while it waits" : "");
    const report = (text, problem) => note(text, problem, false);
    report(normal, false);
    loop(seconds, () => get(url, etag).then((response) => {
      const tag = response.headers.get("ETag");
      if (response.status === 304 || tag === etag) {
        report(normal, false);
        return seconds;
      }
      if (busy()) {
        note("changed since this page was loaded.", false, true);
        return null;
      }
      window.location.reload();
      return null;
    }), report);
  }

  function counts() {
    const selector = "[data-live-count], [data-live-hide-zero], [data-live-attention]";
    const elements = Array.from(document.querySelectorAll(selector));
    const busySeconds = parseFloat(config.countsSeconds);
    const idleSeconds = parseFloat(config.countsIdleSeconds);
    if (!elements.length || !(busySeconds > 0)) return;
    const keys = elements.flatMap((el) => [el.dataset.liveCount, el.dataset.liveHideZero, el.dataset.liveAttention].filter(Boolean).flatMap((key) => key.split(",")));
    const wantsEngine = keys.some((key) => key.startsWith("engine."));
    const wantsStatuses = keys.some((key) => !key.startsWith("engine."));
    const unfinished = (config.unfinished || "").split(",").filter(Boolean);
    let grouped;
    try {
      grouped = new Intl.NumberFormat(document.documentElement.lang || undefined);
    } catch (error) {  // a language the browser does not know: its own way
      grouped = new Intl.NumberFormat();
    }

    function valueOf(values, key) {
      const parts = (key || "").split(",").map((part) => part.trim());
      if (!parts[0] || parts.some((part) => !(part in values))) return undefined;
      return parts.length === 1 ? values[parts[0]] : parts.reduce((sum, part) => sum + values[part], 0);
    }

    function show(values) {
      for (const el of elements) {
        const n = valueOf(values, el.dataset.liveCount);
        if (n !== undefined) {
          const template = (n === 1 && el.dataset.liveTemplateOne) || el.dataset.liveTemplate;
          const number = "liveGrouped" in el.dataset ? grouped.format(n) : String(n);
          el.textContent = template ? template.split("{n}").join(number) : number;
        }
        const zero = valueOf(values, el.dataset.liveHideZero);
        if (zero !== undefined) el.hidden = zero === 0;
        const attention = valueOf(values, el.dataset.liveAttention);
        if (attention !== undefined) {
          const classes = (el.dataset.liveAttentionClasses || "attention " + el.dataset.liveAttention).split(/\s+/);
          for (const name of classes.filter(Boolean)) el.classList.toggle(name, attention > 0);
        }
      }
    }

    function check() {
      const statuses = wantsStatuses ? get(config.countsUrl).then((r) => r.json()) : Promise.resolve(null);
      const engine = wantsEngine ? get(config.engineUrl).then((r) => r.json()) : Promise.resolve(null);
      return Promise.all([statuses, engine]).then(([statusBody, engineBody]) => {
        const values = {};
        if (statusBody) {
          Object.assign(values, statusBody.counts);
          values.all = Object.values(statusBody.counts).reduce((sum, n) => sum + n, 0);
        }
        if (engineBody) {
          values["engine.running_processes"] = engineBody.running_processes;
        }
        show(values);
        const moving = unfinished.some((status) => values[status] > 0) || values["engine.running_processes"] > 0;
        if (moving) return busySeconds;
        return idleSeconds > 0 ? idleSeconds : null;
      });
    }

    loop(busySeconds, check, (text, problem) => {
      if (problem) console.warn("live counts: " + text);
    });
  }

  function tick() {
    const clocks = Array.from(document.querySelectorAll("[data-live-elapsed]"));
    if (!clocks.length) return;
    const loaded = performance.now();
    window.setInterval(() => {
      const since = (performance.now() - loaded) / 1000;
      for (const clock of clocks) clock.textContent = humanDuration(parseFloat(clock.dataset.liveElapsed) + since);
    }, 1000);
  }

  document.querySelectorAll("[data-live]").forEach(watch);
  counts();
  tick();
})();
