from django.urls import path

from . import views

app_name = "answers"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.health, name="health"),
    path("s/<slug:slug>/ask", views.ask, name="ask"),
    path("api/streams/<slug:slug>/questions", views.api_questions, name="api_questions"),
    path("dashboard/<slug:slug>/", views.dashboard, name="dashboard"),
    path("overlay/<slug:slug>/", views.overlay, name="overlay"),
]
