"""HTTP views."""

from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from .models import Stream


def home(request: HttpRequest) -> HttpResponse:
    streams = Stream.objects.all() if request.user.is_staff else Stream.objects.none()
    return render(request, "answers/home.html", {"streams": streams})


def health(request: HttpRequest) -> JsonResponse:
    try:
        connection.ensure_connection()
    except DatabaseError:
        return JsonResponse({"ok": False, "database": "unavailable"}, status=503)
    return JsonResponse({"ok": True})
