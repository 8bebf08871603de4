"""The process admin's notes: the list's column, the box on the process page, and the note's own page.

Saving goes through processes.services.set_note (as PATCH /api/processes/{id}/ does) and needs the run
permission ("Can start, resume, retry and abort processes"): the people who act on processes leave the word
on them. A change is a line of the process's History.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from orchestrator_site.errors import InvalidInput, OrchestratorError
from processes import services
from processes.admin_forms import put_errors_on
from processes.admin_history import note_message, record
from processes.models import Process

logger = logging.getLogger(__name__)

# The list shows this much of a note; the whole of it is in the cell's tooltip (its `title`).
NOTE_SHOWN = 60


class NoteForm(forms.Form):
    # No max_length: the service owns the limit and its message says how long the note is; a browser's
    # maxlength would cut a pasted note short without a word.
    note = forms.CharField(
        required=False, strip=False, label="Note",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80, "id": "id_note"}),
        help_text=f"For the next person on duty: what you know, what you did, what to look out for. At most "
                  f"{services.NOTE_MAX_LENGTH} characters; empty clears the note.",
    )


class NotePages:
    """For ProcessAdmin (which gives the permission check, the process lookup and the redirects)."""

    @admin.display(description="note")
    def note_short(self, obj: Process) -> SafeString | str:
        if not obj.note:
            return ""
        # Shown under the last step in the list (processes.admin_columns), the whole of it on hover.
        return format_html('<span class="process-note-short" title="{}">{}</span>', obj.note,
                           Truncator(obj.note).chars(NOTE_SHOWN))

    def detail_context(self, request: HttpRequest, process: Process) -> dict[str, Any]:
        can_edit = self.has_run_permission(request)
        return {
            **super().detail_context(request, process),
            "note_url": reverse("admin:processes_process_note", args=[process.pk]) if can_edit else None,
            "note_form": NoteForm(initial={"note": process.note}) if can_edit else None,
        }

    def note_urls(self) -> list[URLPattern]:
        return [path("<uuid:object_id>/note/", self.admin_site.admin_view(self.note_view),
                     name="processes_process_note")]

    def note_view(self, request: HttpRequest, object_id: uuid.UUID) -> HttpResponse:
        """The note's page; the process page's box posts here. Bad input shows again with its error, as typed."""
        if not self.has_run_permission(request):
            raise PermissionDenied
        process = self.get_object(request, str(object_id))
        if process is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, str(object_id))
        form = NoteForm(request.POST if request.method == "POST" else None, initial={"note": process.note})
        if request.method == "POST" and form.is_valid():
            try:
                saved = services.set_note(process.pk, form.cleaned_data["note"], by=request.user)
            except InvalidInput as exc:
                put_errors_on(form, exc)
            except OrchestratorError as exc:
                return self._refused(request, process, exc)
            else:
                if not saved.note_changed:
                    messages.info(request, f"The note of process {process.process_id} is unchanged.")
                else:
                    record(self, request, saved, note_message(saved.note))
                    done = "saved" if saved.note else "cleared"
                    messages.success(request, f"Note {done} on process {process.process_id}.")
                return self._to_detail(process)
        detail_url = reverse("admin:processes_process_change", args=[process.pk])
        return TemplateResponse(request, "admin/processes/process/note.html", {
            **self.admin_site.each_context(request),
            "opts": self.opts, "original": process, "process": process, "form": form,
            "title": f"Note: {process.workflow.name} {process.short_id}", "detail_url": detail_url,
            "has_view_permission": True, "process_status_display": process.get_status_display(),
        })
